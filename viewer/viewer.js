const state = { nv: null, canvas: null, spec: null, loads: 0, error: null, target: null };
window.strokeSegViewer = state;
const note = (t) => { const n = element.querySelector('.ss-note'); if (n) n.textContent = t; };
async function ensure() {
  if (typeof niivue === 'undefined') { note('3D viewer unavailable: NiiVue is not installed on this server (run `npm ci` in the app folder). The PNG montage below shows the result.'); return null; }
  const canvas = element.querySelector('canvas');
  if (!state.nv || state.canvas !== canvas) {
    // the crosshair is light blue: red is the lesion's colour alone
    state.nv = new niivue.Niivue({ backColor: [0, 0, 0, 1], crosshairColor: [0.3, 0.7, 1, 1], show3Dcrosshair: true, isColorbar: false });
    await state.nv.attachToCanvas(canvas);
    state.canvas = canvas;
  }
  return state.nv;
}
function lesionVoxel(vol) {
  // The lesion voxel (storage order) nearest the centre of all lesion voxels, or null for an empty mask.
  const nx = vol.hdr.dims[1], ny = vol.hdr.dims[2], img = vol.img;
  const at = (i) => [i % nx, Math.floor(i / nx) % ny, Math.floor(i / (nx * ny))];
  let n = 0; const sum = [0, 0, 0];
  for (let i = 0; i < img.length; i++) if (img[i] > 0.5) { const v = at(i); n += 1; for (let k = 0; k < 3; k++) sum[k] += v[k]; }
  if (!n) return null;
  let best = null, bestD = Infinity;
  for (let i = 0; i < img.length; i++) {
    if (!(img[i] > 0.5)) continue;
    const v = at(i); const d = v.reduce((a, x, k) => a + (x - sum[k] / n) ** 2, 0);
    if (d < bestD) { bestD = d; best = v; }
  }
  return best;
}
function centreOnLesion(nv) {
  // Open on the lesion: the crosshair (and so every slice shown) goes to a voxel of it.
  const vol = nv.volumes[1];
  const vox = lesionVoxel(vol);
  state.target = vox;
  if (!vox) return;
  const A = vol.hdr.affine;
  const mm = [0, 1, 2].map((r) => A[r][0] * vox[0] + A[r][1] * vox[1] + A[r][2] * vox[2] + A[r][3]);
  nv.scene.crosshairPos = nv.mm2frac(mm);
  nv.drawScene();
}
async function show() {
  let spec = null;
  try { spec = props.value ? JSON.parse(props.value) : null; } catch (e) { spec = null; }
  if (!spec) return;
  const nv = await ensure();
  if (!nv) return;
  const base = element.querySelector('.ss-base').value;
  const opacity = parseFloat(element.querySelector('.ss-opacity').value);
  try {
    await nv.loadVolumes([
      { url: spec[base], name: spec[base].split('/').pop(), colormap: 'gray' },
      { url: spec.mask, name: 'mask.nii.gz', colormap: 'red', opacity: opacity, cal_min: 0.5, cal_max: 1 },
    ].concat(spec.brain ? [
      // the brain mask the model used, third (the lesion stays volume 1); shown by the toggle
      { url: spec.brain, name: 'brain_mask.nii.gz', colormap: 'blue', opacity: brainOpacity(), cal_min: 0.5, cal_max: 1 },
    ] : []));
    centreOnLesion(nv);
    state.spec = spec; state.loads += 1; state.error = null;
    note('DWI/ADC with the lesion in red. Drag to move the crosshair; scroll to change slices.');
  } catch (e) { state.error = String(e); note('The viewer could not load the volumes: ' + e); }
}
element.querySelector('.ss-opacity').addEventListener('input', (ev) => {
  if (state.nv && state.nv.volumes.length > 1) { state.nv.setOpacity(1, parseFloat(ev.target.value)); }
});
element.querySelector('.ss-base').addEventListener('change', () => show());
function brainOpacity() { return element.querySelector('.ss-brain').checked ? 0.3 : 0; }
element.querySelector('.ss-brain').addEventListener('change', () => {
  if (state.nv && state.nv.volumes.length > 2) { state.nv.setOpacity(2, brainOpacity()); state.nv.drawScene(); }
});
element.querySelector('.ss-view').addEventListener('change', (ev) => {
  if (!state.nv) return;
  const t = { mpr: state.nv.sliceTypeMultiplanar, render: state.nv.sliceTypeRender, axial: state.nv.sliceTypeAxial }[ev.target.value];
  state.nv.setSliceType(t);
});
watch('value', () => show());
show();
