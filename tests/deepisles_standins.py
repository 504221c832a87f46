"""Stand-in DeepISLES checkpoints the tests write: TorchScript rules on the z-scored [ADC, DWI] channels whose
output is known, in the layout of the Zenodo record (``model0.ts`` ... ``model14.ts``), and the package's own
``Inferer`` run on them (its weight download replaced by the stand-in folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class RuleNet(torch.nn.Module):
    """Lesion logit = w_dwi * DWI_z + w_adc * ADC_z + bias, averaged over 3 voxels along the first axis (so window
    borders matter); background logit 0. A high DWI and a low ADC make a lesion; swapping the channels changes the
    answer. ``spin`` > 0 adds that many 256x256 matrix products per window: a slow model for queue tests."""

    def __init__(self, w_adc: float, w_dwi: float, bias: float, spin: int = 0, pool: bool = True) -> None:
        super().__init__()
        self.w_adc, self.w_dwi, self.bias, self.spin, self.pool = w_adc, w_dwi, bias, spin, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spin > 0:
            w = torch.ones(256, 256) / 256.0
            y = torch.ones(256, 256)
            for _ in range(self.spin):
                y = y @ w
            x = x + 0.0 * y.mean()
        lesion = self.w_dwi * x[:, 1:2] + self.w_adc * x[:, 0:1] + self.bias
        if self.pool:
            lesion = F.avg_pool3d(lesion, (3, 1, 1), stride=1, padding=(1, 0, 0))
        return torch.cat([torch.zeros_like(lesion), lesion], dim=1)


def write_standins(folder: Path, n: int = 15, seed: int = 0, spin: int = 0, pool: bool = True) -> Path:
    """``n`` scripted RuleNets with slightly different rules, as ``model{i}.ts`` (``pool=False``: voxel-wise rules,
    which no storage order can change)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        net = RuleNet(
            w_adc=float(-1.5 + 0.2 * rng.standard_normal()),
            w_dwi=float(2.0 + 0.2 * rng.standard_normal()),
            bias=float(-3.0 + 0.3 * rng.standard_normal()),
            spin=spin,
            pool=pool,
        )
        torch.jit.save(torch.jit.script(net.eval()), str(folder / f"model{i}.ts"))
    return folder


def package_mask(monkeypatch, weights: Path, adc: Path, dwi: Path, out: Path) -> np.ndarray:
    """What ``stroke_segmentor.Inferer().infer(adc_path=..., dwi_path=..., segmentation_path=out)`` writes, read back
    as a voxel array (the file it writes is on the DWI grid)."""
    import nibabel as nib
    import stroke_segmentor.model_handler as handler
    from stroke_segmentor import Inferer

    monkeypatch.setattr(handler, "fetch_weights", lambda: weights)
    monkeypatch.setenv("STROKE_SEGMENTOR_CITATION_REMINDER", "false")
    Inferer(force_cpu=True).infer(adc_path=adc, dwi_path=dwi, segmentation_path=out)
    return np.asarray(nib.load(str(out)).dataobj).astype(np.uint8)
