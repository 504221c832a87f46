"""The clinical report (stroke_seg.report): core volume, side, vascular territory, FLAIR ratio, the PDF page, the CLI.

Generated heads (``stroke_seg.synthetic``) are the MNI152 template itself, so a case stored with ``oblique=True`` has
world = MNI mm whatever its voxel order and tilt: the side and the territory of a lesion are known from where it was
put. The real ISLES'22 and JHU cases come from ../shared (skipped without it, failed under STROKE_SEG_STRICT=1).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from conftest import ROOT, require, require_module
from stroke_seg.cli import main as cli_main
from stroke_seg.io.case import load_case
from stroke_seg.report import ReportConfig, describe, write_pdf
from stroke_seg.report.registration import template_brain
from stroke_seg.report.territories import ATLAS_DIR, ATLAS_TO_MNI, load_atlas, territory_table
from stroke_seg.synthetic import generator as synth

SHARED = ROOT.parent / "shared" / "data"
NO_REGISTRATION = ReportConfig(register=False)


def _acq(**kw) -> synth.Acquisition:
    return synth.Acquisition(**({"voxel_size": (3.0, 3.0, 3.0), "oblique": True} | kw))


def _case(c: synth.SynthCase, data=None, affine=None):
    """(Case, mask) of a generated case; ``data`` maps each array before storing it on ``affine``."""
    images = {"dwi": c.dwi, "adc": c.adc, "flair": c.flair, "mask": c.mask}
    if data is not None:
        images = {
            k: None if v is None else nib.Nifti1Image(data(np.asanyarray(v.dataobj)), affine, v.header)
            for k, v in images.items()
        }
    case = load_case(images["dwi"], images["adc"], images["flair"], images["mask"])
    return case, case.ground_truth


# --- the atlas and its MNI placement ------------------------------------------------------------------------------


def _atlas_brain_dice(affine: np.ndarray) -> float:
    """Dice of the atlas's labelled brain against the MNI152 template brain on its 3 mm grid."""
    t1, brain, t_aff = template_brain()
    atlas = load_atlas().level1 > 0
    ijk = np.argwhere(np.ones(brain.shape, bool))
    mni = ijk @ t_aff[:3, :3].T + t_aff[:3, 3]
    a = np.rint((mni - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(int)
    inside = np.all((a >= 0) & (a < atlas.shape), axis=1)
    got = np.zeros(len(ijk), bool)
    got[inside] = atlas[tuple(a[inside].T)]
    ref = brain.ravel()
    return 2 * (got & ref).sum() / (got.sum() + ref.sum())


def test_atlas_affine_puts_left_labels_left_and_the_brain_on_the_template():
    atlas = load_atlas()
    table = territory_table()
    assert len(table) == 32 and {t.territory for t in table.values()} == {"ACA", "MCA", "PCA", "VB", "ventricle"}
    for label, t in table.items():
        x = (np.argwhere(atlas.level1 == label) @ ATLAS_TO_MNI[:3, :3].T + ATLAS_TO_MNI[:3, 3])[:, 0].mean()
        assert (x < 0) == (t.side == "left"), f"{t.name}: centroid at MNI x = {x:.1f}"
    dice = _atlas_brain_dice(ATLAS_TO_MNI)
    assert dice > 0.9
    for axis in range(3):
        for step in (-4.0, 4.0):
            shifted = ATLAS_TO_MNI.copy()
            shifted[axis, 3] += step
            assert dice > _atlas_brain_dice(shifted), f"a {step:+g} mm shift on axis {axis} fits the template better"


def test_level2_file_is_the_level1_grouping():
    """The level-2 file, read by intensity, groups the level-1 labels as the table's territories say."""
    level1 = load_atlas().level1
    level2 = np.asarray(nib.load(str(ATLAS_DIR / "ArterialAtlas_level2.nii.gz")).dataobj)[..., 0]
    groups = {1: "ACA", 2: "ACA", 3: "MCA", 4: "MCA", 5: "PCA", 6: "PCA", 7: "VB", 8: "VB", 9: "ventricle"}
    groups[10] = "ventricle"
    table = territory_table()
    sample = level1[::3, ::3, ::3] > 0
    for a, b in zip(level1[::3, ::3, ::3][sample], level2[::3, ::3, ::3][sample]):
        assert table[int(a)].territory == groups[int(b)]


# --- core volume -----------------------------------------------------------------------------------------------------


def test_core_volume_is_the_hand_count(tmp_path):
    c = synth.make_case(11, "territorial", _acq(adc_unit="1e-3", orientation="LPS"))
    adc = np.asarray(c.adc.dataobj, np.float64) * 1000.0  # stored in 1e-3 mm²/s
    mask = np.asarray(c.mask.dataobj) > 0
    voxel_ml = abs(np.linalg.det(c.mask.affine[:3, :3])) / 1000.0
    case, lesion = _case(c)
    report = describe(case, lesion, config=NO_REGISTRATION)
    assert report.lesion_volume_ml == pytest.approx(mask.sum() * voxel_ml, rel=1e-6)
    assert report.core_ml == pytest.approx(((adc < 620) & mask).sum() * voxel_ml, rel=1e-6) and report.core_ml > 0
    assert sum(les.core_ml for les in report.lesions) == pytest.approx(report.core_ml)
    stricter = describe(case, lesion, config=ReportConfig(core_adc=500, register=False))
    assert stricter.core_ml == pytest.approx(((adc < 500) & mask).sum() * voxel_ml, rel=1e-6)
    assert stricter.core_ml < report.core_ml and stricter.settings["core_adc"] == 500


# --- hemisphere: mirrored heads and flipped voxel order ---------------------------------------------------------------


def _truth_side(c: synth.SynthCase) -> str:
    mask = np.asarray(c.mask.dataobj) > 0
    x = (np.argwhere(mask) @ c.mask.affine[:3, :3].T + c.mask.affine[:3, 3])[:, 0]
    assert (x < -3).all() or (x > 3).all(), "the generated lesion must lie on one side for this test"
    return "left" if x.mean() < 0 else "right"


@pytest.mark.parametrize(
    "seed, pattern, orientation",
    [(1, "territorial", "LPS"), (3, "territorial", "RAS"), (9, "posterior", "RAS"), (2, "lacunar", "LPS")],
    ids=["territorial-LPS", "territorial-RAS", "posterior-RAS", "lacunar-LPS"],
)
def test_hemisphere_follows_the_patient_not_the_voxel_order(seed, pattern, orientation):
    c = synth.make_case(seed, pattern, _acq(orientation=orientation, tilt_deg=(4.0, -3.0, 5.0)))
    truth = _truth_side(c)
    other = {"left": "right", "right": "left"}[truth]
    affine = c.dwi.affine
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = c.dwi.shape[0] - 1
    variants = {
        "as stored": (None, None, truth),
        "voxel order flipped, same head": (lambda a: np.ascontiguousarray(a[::-1]), affine @ flip, truth),
        "head mirrored left-right": (lambda a: np.ascontiguousarray(a[::-1]), affine, other),
    }
    for name, (data, aff, expected) in variants.items():
        case, lesion = _case(c, data, aff)
        largest = describe(case, lesion).lesions[0]
        assert largest.hemisphere == expected, f"{name}: {largest.hemisphere}, expected {expected}"


def test_a_lesion_across_the_midline_is_both():
    c = synth.make_case(5, "control", _acq())
    case, _ = _case(c)
    mask = _sphere(case, np.array([0.0, -10.0, 30.0]), 12.0)
    assert describe(case, mask).lesions[0].hemisphere == "both"


@pytest.mark.parametrize("first, slices", [(None, None), (30, 40)], ids=["whole-head", "80mm-slab"])
def test_registration_recovers_the_mni_position(first, slices):
    """World = MNI mm on these heads: the registration's map is near the identity, also on a slab that cuts the brain
    (whose head-foot position the brain-mask moments cannot give)."""
    from stroke_seg.report.registration import is_slab, register_to_mni

    c = synth.make_case(81, "territorial", _acq(voxel_size=(2.0, 2.0, 2.0), tilt_deg=(10.0, -6.0, 5.0)))
    cut = (slice(None), slice(None), slice(first, None if first is None else first + slices))
    case = load_case(c.dwi.slicer[cut], c.adc.slicer[cut])
    brain = np.asarray(c.brain.slicer[cut].dataobj) > 0
    assert is_slab(brain, case.affine) == (first is not None)
    reg = register_to_mni(case.dwi, brain, case.affine)
    world = np.argwhere(brain)[::20] @ case.affine[:3, :3].T + case.affine[:3, 3]
    error = np.linalg.norm(reg.to_mni(world) - world, axis=1)
    assert np.median(error) < 6.0 and reg.brain_dice > 0.85 and reg.warning is None


def test_registration_is_the_same_run_after_run_and_on_any_thread_count():
    """The same scan gets the same map (so the same territories): the metric's sample is seeded, never from the clock
    (which moved the map by millimetres from run to run); ITK's multi-threaded sums, and another thread count, change
    only the rounding (1e-9 mm seen on a loaded machine)."""
    import SimpleITK as sitk

    from stroke_seg.report.registration import register_to_mni

    c = synth.make_case(12, "territorial", _acq(voxel_size=(3.0, 3.0, 3.0), tilt_deg=(4.0, 0.0, -3.0)))
    case = load_case(c.dwi, c.adc)
    brain = np.asarray(c.brain.dataobj) > 0
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    try:
        maps = []
        for n in (threads, threads, 1):
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
            maps.append(register_to_mni(case.dwi, brain, case.affine).world_to_mni)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    assert np.allclose(maps[0], maps[1], rtol=0, atol=1e-6) and np.allclose(maps[0], maps[2], rtol=0, atol=1e-6)
    other = register_to_mni(case.dwi, brain, case.affine, seed=2).world_to_mni
    assert np.abs(maps[0] - other).max() > 1e-4  # the seed is used: another seed, another sample
    with pytest.raises(ValueError, match="seed"):
        register_to_mni(case.dwi, brain, case.affine, seed=0)


@pytest.mark.parametrize("reach", [0.0, 2.5, 6.0])
def test_a_point_outside_the_atlas_takes_the_nearest_label_within_reach(reach):
    """Property over random points in and around the brain: each gets its own atlas voxel's label, else that of the
    first labelled offset (nearest first) within ``reach``, else 0, as a point-by-point search finds."""
    from stroke_seg.report.describe import _offsets, atlas_labels
    from stroke_seg.report.territories import load_atlas

    atlas = load_atlas()
    pts = np.random.default_rng(int(reach * 10)).uniform([-95, -130, -80], [95, 95, 105], (3000, 3))
    expected = []
    steps = np.vstack([np.zeros((1, 3)), _offsets(reach)])
    for p in pts:  # one point at a time: its own voxel, then every offset, nearest first
        labels = atlas.labels_at(p + steps)
        expected.append(int(labels[np.argmax(labels > 0)]) if labels.any() else 0)
    got = atlas_labels(pts, reach)
    assert got.tolist() == expected
    assert 0 < int((got == 0).sum()) < len(pts)  # points outside every reach and points inside both occur


def test_a_brain_too_small_to_place_is_described_in_scanner_coordinates():
    dwi = np.zeros((20, 20, 20), np.float32)
    dwi[6:14, 6:14, 6:14] = 100.0 + np.arange(512, dtype=np.float32).reshape(8, 8, 8) % 7
    adc = np.where(dwi > 0, 800.0, 0.0).astype(np.float32)
    adc[7:9, 7:9, 7:9] = 500.0
    case = load_case(nib.Nifti1Image(dwi, np.eye(4)), nib.Nifti1Image(adc, np.eye(4)))
    mask = np.zeros(dwi.shape, bool)
    mask[7:9, 7:9, 7:10] = True
    report = describe(case, mask)
    assert report.registration["method"].startswith("none") and any("MNI space" in w for w in report.warnings)
    assert report.core_ml == pytest.approx(0.008) and report.lesions[0].hemisphere == "right"


# --- territory at known MNI positions ---------------------------------------------------------------------------------


def _sphere(case, centre_mni: np.ndarray, radius_mm: float) -> np.ndarray:
    """A ball around a world (= MNI for these heads) point, on the case grid through its affine."""
    ijk = np.argwhere(np.ones(case.shape, bool))
    world = ijk @ case.affine[:3, :3].T + case.affine[:3, 3]
    return (np.linalg.norm(world - centre_mni, axis=1) <= radius_mm).reshape(case.shape)


def _deepest_points() -> dict[int, np.ndarray]:
    """MNI mm of the point of each level-2 label (1-8) farthest from any other label, from the level-2 file."""
    level2 = np.asarray(nib.load(str(ATLAS_DIR / "ArterialAtlas_level2.nii.gz")).dataobj)[::3, ::3, ::3, 0]
    out = {}
    for label in range(1, 9):
        depth = ndi.distance_transform_edt(level2 == label)
        ijk = np.array(np.unravel_index(np.argmax(depth), depth.shape)) * 3
        out[label] = ijk @ ATLAS_TO_MNI[:3, :3].T + ATLAS_TO_MNI[:3, 3]
    return out


LEVEL2 = {1: ("ACA", "left"), 2: ("ACA", "right"), 3: ("MCA", "left"), 4: ("MCA", "right")}
LEVEL2 |= {5: ("PCA", "left"), 6: ("PCA", "right"), 7: ("VB", "left"), 8: ("VB", "right")}


def test_territory_of_lesions_placed_at_known_mni_positions():
    c = synth.make_case(7, "control", _acq(orientation="LPS", tilt_deg=(6.0, -4.0, 8.0)))
    case, _ = _case(c)
    for label, centre in _deepest_points().items():
        territory, side = LEVEL2[label]
        if territory == "VB":
            side = "left" if centre[0] < -4 else "right" if centre[0] > 4 else "both"
        mask = _sphere(case, centre, 5.0)
        les = describe(case, mask).lesions[0]
        where = f"level-2 label {label} at MNI {np.round(centre)}"
        assert les.territory == territory and les.territories_ml[territory] > 0.6 * les.volume_ml, where
        assert les.hemisphere == side, where
        if side != "both":
            assert les.regions[0][0].endswith(side), where


# --- FLAIR ratio and the mismatch statement ---------------------------------------------------------------------------


@pytest.mark.parametrize("gain, mismatch", [(1.0, True), (1.6, False)], ids=["flair-negative", "flair-positive"])
def test_flair_ratio_against_the_mirrored_side(gain, mismatch):
    c = synth.make_case(1, "territorial", _acq(with_flair=True))
    case, lesion = _case(c)
    brain = np.asarray(c.brain.dataobj) > 0
    flair = np.where(brain, 500.0, 0.0).astype(np.float32)
    flair[lesion] *= gain
    report = describe(case.__class__(**{**case.__dict__, "flair": flair}), lesion, brain=brain)
    assert report.flair_ratio == pytest.approx(gain, rel=0.02)
    assert report.mismatch is mismatch and "research estimate" in report.mismatch_statement
    no_flair = describe(case.__class__(**{**case.__dict__, "flair": None}), lesion, config=NO_REGISTRATION)
    assert no_flair.mismatch is None and no_flair.flair_ratio is None


# --- the PDF page and the CLI -----------------------------------------------------------------------------------------


def test_cli_report_writes_json_and_a_pdf_whose_text_reads_back(tmp_path):
    pypdf = require_module("pypdf")
    c = synth.make_case(3, "territorial", _acq(with_flair=True))
    c.save(tmp_path / "case")
    f = tmp_path / "case"
    args = [
        "report",
        "--dwi",
        str(f / "dwi.nii.gz"),
        "--adc",
        str(f / "adc.nii.gz"),
        "--flair",
        str(f / "flair.nii.gz"),
    ]
    args += ["--mask", str(f / "mask.nii.gz"), "--json", str(tmp_path / "r.json"), "--pdf", str(tmp_path / "r.pdf")]
    assert cli_main(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    largest = report["lesions"][0]
    assert largest["hemisphere"] == _truth_side(c) and largest["territory"] in ("ACA", "MCA", "PCA", "VB")
    reader = pypdf.PdfReader(str(tmp_path / "r.pdf"))
    assert len(reader.pages) == 1
    text = " ".join(reader.pages[0].extract_text().split())
    assert f"Lesion volume {report['lesion_volume_ml']:.1f} mL" in text
    assert f"ischemic core {report['core_ml']:.1f} mL" in text
    assert largest["hemisphere"] in text and largest["territory"] in text
    assert "Research use only" in text and "Liu C-F" in text and "research estimate" in text


def test_write_pdf_of_an_empty_mask(tmp_path):
    pypdf = require_module("pypdf")
    c = synth.make_case(5, "control", _acq())
    case, lesion = _case(c)
    report = describe(case, lesion, config=NO_REGISTRATION)
    assert report.lesion_count == 0 and report.core_ml == 0
    text = pypdf.PdfReader(str(write_pdf(report, case, lesion, tmp_path / "empty.pdf"))).pages[0].extract_text()
    assert "Lesion volume 0.0 mL" in " ".join(text.split())


# --- every segmentation carries the report --------------------------------------------------------------------------


def test_segment_result_carries_the_same_report(tmp_path):
    from stroke_seg import SegmentConfig, segment

    c = synth.make_case(3, "territorial", _acq(skull_stripped=True))
    result = segment({"dwi": c.dwi, "adc": c.adc}, model="adc-threshold", config=SegmentConfig(core_adc=600.0))
    report = result.report
    assert report is not None and report.model == "adc-threshold" and report.settings["core_adc"] == 600.0
    brain = np.asarray(result.brain_mask.dataobj) > 0
    again = describe(result.case, np.asarray(result.mask.dataobj) > 0, config=ReportConfig(core_adc=600.0), brain=brain)
    assert again.core_ml == report.core_ml and again.lesion_count == report.lesion_count == result.metrics.count
    # segment() registers beside post-processing; the map and the territories are those describe() finds itself
    assert {k: v for k, v in again.registration.items() if k != "seconds"} == {
        k: v for k, v in report.registration.items() if k != "seconds"
    }
    assert again.territories_ml == report.territories_ml

    def placed(r):
        return [(les.hemisphere, les.territory, les.territories_ml, les.regions) for les in r.lesions]

    assert placed(again) == placed(report)
    mni = np.array([les.centroid_mni for les in again.lesions] + [les.centroid_mni for les in report.lesions])
    assert np.allclose(mni[: len(mni) // 2], mni[len(mni) // 2 :], rtol=0, atol=1e-6)  # ITK's sums: rounding only
    out = json.loads(json.dumps(result.to_dict()))
    assert out["report"]["core_ml"] == out["core_ml"] == round(report.core_ml, 4)
    assert [row["hemisphere"] for row in out["lesions"]] == [les.hemisphere for les in report.lesions]
    assert "report" in result.timings
    off = segment({"dwi": c.dwi, "adc": c.adc}, model="adc-threshold", config=SegmentConfig(clinical_report=False))
    assert off.report is None and "report" not in off.to_dict()


def test_result_entry_holds_the_pdf_and_the_app_rows(tmp_path):
    """What the app shows: the entry folder's report.pdf (the download under the viewer) and the clinical table."""
    from stroke_seg import segment
    from stroke_seg.presentation import CLINICAL_COLUMNS, clinical_markdown, clinical_rows
    from stroke_seg.serving.jobs import write_entry

    c = synth.make_case(3, "territorial", _acq(skull_stripped=True))
    result = segment({"dwi": c.dwi, "adc": c.adc}, model="adc-threshold")
    write_entry(result, result.case, {}, tmp_path)
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
    saved = json.loads((tmp_path / "report.json").read_text())
    rows = clinical_rows(saved)
    assert len(rows) == result.report.lesion_count and all(len(r) == len(CLINICAL_COLUMNS) for r in rows)
    assert rows[0][3] == result.report.lesions[0].hemisphere
    assert f"Ischemic core {result.report.core_ml:.1f} mL" in clinical_markdown(saved)


# --- DICOM as the scanner sent it: b0 + b1000, no ADC series ----------------------------------------------------------


def _dicom_vs_nifti(
    tmp_path, model: str, seed: int, pattern: str, acq: synth.Acquisition, **options
) -> tuple[float, int, int]:
    """Dice of the mask from a DICOM export holding only the scanner's b0 and b1000 (raw noisy signals, one scanner
    gain, rounded to uint16, noise in the background) against the NIfTI path's mask (DWI + the scanner's ADC map)."""
    from stroke_seg import SegmentConfig, segment
    from stroke_seg.io.dicom import load_dicom
    from stroke_seg.pipeline.metrics import dice
    from stroke_seg.synthetic.dicom_export import write_dicom_case

    require_module("pydicom")
    c = synth.make_case(seed, pattern, acq)
    b0, b1000 = c.scanner_b0("uint16", peak=16000.0)
    folder = write_dicom_case(tmp_path / "export", b1000, b0, pixel_dtype="uint16", deidentified="missing")
    chosen = load_dicom(folder, tmp_path / "work")
    assert chosen.adc is None and chosen.b0 is not None
    config = SegmentConfig(clinical_report=False, **options)
    nifti = segment({"dwi": c.dwi, "adc": c.adc}, model=model, config=config)
    dicom = segment(chosen.as_inputs(), model=model, config=config)

    def canonical(img) -> np.ndarray:
        return np.asarray(nib.as_closest_canonical(img).dataobj) > 0

    a, b = canonical(nifti.mask), canonical(dicom.mask)
    return dice(a, b), int(a.sum()), int(b.sum())


def test_dicom_b0_b1000_without_adc_gives_the_nifti_mask(tmp_path):
    acq = _acq(orientation="LPS", tilt_deg=(8.0, -5.0, 4.0), dtype="int16", skull_stripped=False)
    score, n_nifti, n_dicom = _dicom_vs_nifti(
        tmp_path, "adc-threshold", 31, "territorial", acq, brain_extractor="morphology"
    )
    assert n_nifti > 50 and score >= 0.95, f"Dice {score:.3f} ({n_dicom} vs {n_nifti} voxels)"


@pytest.mark.slow
def test_dicom_b0_b1000_without_adc_gives_the_nifti_mask_unet(tmp_path):
    from stroke_seg.models.unet import WEIGHTS_PATH

    require(WEIGHTS_PATH.is_file(), f"U-Net weights missing at {WEIGHTS_PATH}")
    acq = _acq(voxel_size=(2.0, 2.0, 2.0), orientation="LPS", tilt_deg=(10.0, -6.0, 5.0), dtype="int16")
    score, n_nifti, n_dicom = _dicom_vs_nifti(tmp_path, "unet", 81, "territorial", acq)
    assert n_nifti > 100 and score >= 0.95, f"Dice {score:.3f} ({n_dicom} vs {n_nifti} voxels)"


# --- real scans -------------------------------------------------------------------------------------------------------


def test_real_expert_mask_volume_and_core_match_the_count():
    folder = SHARED / "isles22-strokecase0001"
    require(folder.is_dir(), f"shared ISLES'22 case missing at {folder}")
    mask = np.asarray(nib.load(str(folder / "expert_mask.nii.gz")).dataobj) > 0
    adc = np.asarray(nib.load(str(folder / "adc.nii.gz")).dataobj, np.float64) * 1000.0  # README: 1e-3 mm²/s
    voxel_ml = abs(np.linalg.det(nib.load(str(folder / "dwi.nii.gz")).affine[:3, :3])) / 1000.0
    report = describe(
        {"dwi": folder / "dwi.nii.gz", "adc": folder / "adc.nii.gz"}, folder / "expert_mask.nii.gz"
    ).to_dict()
    assert report["lesion_volume_ml"] == pytest.approx(mask.sum() * voxel_ml, rel=0.01)
    assert report["core_ml"] == pytest.approx(((adc < 620) & mask).sum() * voxel_ml, rel=0.02)
    assert report["lesion_count"] == 31 and report["registration"]["brain_dice"] > 0.85
    assert {les["hemisphere"] for les in report["lesions"]} <= {"left", "right", "both"}


def test_real_large_infarct_is_left_mca():
    """JHU ADS Subject01: the ADS tool's own report puts this infarct in the left MCA territory (temporal_L, MCAL)."""
    folder = SHARED / "jhu-ads-subject01"
    require(folder.is_dir(), f"shared JHU case missing at {folder}")
    report = describe({"dwi": folder / "dwi.nii.gz", "b0": folder / "b0.nii.gz"}, folder / "dagmnet_mask.nii.gz")
    largest = report.lesions[0]
    assert largest.volume_ml > 100 and largest.hemisphere == "left" and largest.territory == "MCA"
    assert largest.territories_ml["MCA"] > 0.8 * largest.volume_ml
    assert report.registration["brain_dice"] > 0.85
