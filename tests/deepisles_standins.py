"""Stand-in DeepISLES checkpoints the tests write, in the layout of the Zenodo record (``model0.ts`` ...
``model14.ts``), and the package's own ``Inferer`` run on them (its weight download replaced by the stand-in folder).

Two kinds: :class:`RuleNet` (TorchScript rules on the z-scored [ADC, DWI] channels whose output is known; cheap) and
:func:`segresnet_standin` (a scripted MONAI ``SegResNetDS``, NVAUTO's architecture at any size, whose weights carry
the same rule through the network plus small random weights in every layer)."""

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


def write_standins(
    folder: Path, n: int = 15, seed: int = 0, spin: int = 0, pool: bool = True, slow: int | None = None
) -> Path:
    """``n`` scripted RuleNets with slightly different rules, as ``model{i}.ts`` (``pool=False``: voxel-wise rules,
    which no storage order can change); ``spin`` slows the first ``slow`` of them (all by default; the backend runs
    them in file order), the same rules either way."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        net = RuleNet(
            w_adc=float(-1.5 + 0.2 * rng.standard_normal()),
            w_dwi=float(2.0 + 0.2 * rng.standard_normal()),
            bias=float(-3.0 + 0.3 * rng.standard_normal()),
            spin=spin if slow is None or i < slow else 0,
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


def segresnet_standin(
    seed: int = 0,
    *,
    init_filters: int = 4,
    blocks_down: tuple[int, ...] = (1, 1, 1),
    noise: float = 0.02,
    rule: tuple[float, float, float] = (-1.5, 2.0, -6.0),
) -> torch.nn.Module:
    """An eager MONAI ``SegResNetDS`` (instance norm, 2 channels in and out, deep supervision 1) whose lesion logit
    is about ``w_adc * ADC_z + w_dwi * DWI_z + bias`` (``rule``): the initial convolution carries ADC and DWI in two
    feature channels, the highest-resolution skip connection brings them to the head. Every other weight is random,
    scaled by ``noise`` / sqrt(fan-in), so each layer changes the output a little and the mask has soft borders.
    Auto3DSeg's default size (NVAUTO's scale, 87 M parameters) is ``init_filters=32, blocks_down=(1, 2, 2, 4, 4)``."""
    from monai.networks.nets import SegResNetDS

    torch.manual_seed(seed)
    net = SegResNetDS(
        init_filters=init_filters, blocks_down=tuple(blocks_down), norm="instance", in_channels=2, out_channels=2
    ).eval()
    w_adc, w_dwi, bias = rule
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" not in name:  # instance norm keeps MONAI's affine init (weight 1, bias 0)
                p.normal_(0.0, noise / float(np.sqrt(p[0].numel() if p.dim() > 1 else 1)))
        net.encoder.conv_init.weight[0, 0, 1, 1, 1] += 1.0  # feature 0 <- ADC (input channel 0), centre tap
        net.encoder.conv_init.weight[1, 1, 1, 1, 1] += 1.0  # feature 1 <- DWI
        head = net.up_layers[-1].head
        head.weight[1, 0, 0, 0, 0] += w_adc
        head.weight[1, 1, 0, 0, 0] += w_dwi
        head.bias[1] += bias
    return net


def write_segresnet_standins(folder: Path, n: int = 15, seed: int = 0, **kwargs) -> Path:
    """``n`` scripted :func:`segresnet_standin` networks with slightly different rules and random weights, as
    ``model{i}.ts``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        rule = (
            -1.5 + 0.2 * rng.standard_normal(),
            2.0 + 0.2 * rng.standard_normal(),
            -6.0 + 0.3 * rng.standard_normal(),
        )
        net = segresnet_standin(seed + i, rule=rule, **kwargs)
        torch.jit.save(torch.jit.script(net), str(folder / f"model{i}.ts"))
    return folder
