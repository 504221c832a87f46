"""The synthetic scanner's signal model: tissue properties -> b=0 and b=1000 signals -> noise -> the scanner's ADC.

Per voxel, with partial-volume mixing of *signals* (not of ADC values)::

    S0 = sum_t f_t * S0_t                     (b=0, T2-weighted)
    S  = sum_t f_t * S0_t * exp(-b * ADC_t)   (b = 1000 s/mm²)

then skull-base gains, a smooth multiplicative bias field (same coil for both), Rician noise on both, and the ADC a
scanner computes, ``ADC = ln(S0 / S) / b`` (0 where S0 is background). ADC in 1e-6 mm²/s; arrays (X, Y, Z) float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stroke_seg.synthetic.artefacts import _skull_base_gain, _smooth_field, rician
from stroke_seg.synthetic.head import Grid, Tissue
from stroke_seg.synthetic.lesions import Lesions

B_VALUE = 1000.0  # s/mm²


@dataclass(frozen=True, eq=False)
class Signals:
    """What the synthetic scanner measured, before storage (the DWI's arbitrary scale)."""

    dwi: np.ndarray
    b0: np.ndarray
    adc: np.ndarray
    flair: np.ndarray | None


def _sig(s0, adc):
    return s0 * np.exp(-B_VALUE * adc * 1e-6)


def _tissue_properties(rng: np.random.Generator, grid: Grid, tissue: Tissue, les: Lesions) -> dict:
    """ADC (1e-6 mm²/s) and S0 of every tissue class, drawn for one case; textured where tissue is normal."""
    shape, vs = grid.shape, grid.vs
    adc_gm, adc_wm, adc_csf = rng.uniform(790, 860), rng.uniform(660, 760), rng.uniform(2800, 3200)
    s0_gm, s0_wm, s0_csf, s0_scalp = 1.0, rng.uniform(0.7, 0.8), rng.uniform(1.8, 2.6), rng.uniform(0.15, 0.4)
    core = rng.uniform(300, 500)
    hetero = 1 + _smooth_field(rng, shape, 0.2, 6 / vs.mean())
    # The core's restriction fades toward the edge while the DWI stays bright: real lesion masks include
    # that mildly restricted rim. v1.4: the rim is wider (depth**2-4) and its edge nearly normal
    # (ADC 650-860; ISLES'22 case: lesion ADC median 754, p75 996), its T2 rise larger toward the edge.
    rim = les.les_depth ** rng.uniform(2.0, 4.0)
    adc_les = (core + (rng.uniform(650, 860) - core) * rim) * hetero
    adc_les = np.where(les.is_mild, rng.uniform(620, 840) * hetero, adc_les)
    s0_les = (
        rng.uniform(1.1, 1.5) * (1 + rng.uniform(0.1, 0.4) * rim) * np.where(tissue.gm > tissue.wm, s0_gm, s0_wm)
    )  # T2 rise of acute tissue
    s0_les = np.where(les.is_mild, s0_les * rng.uniform(1.15, 1.4), s0_les)
    if les.mimic_kind == "shine_through":  # v1.4: ADC clearly raised (950-1300), apart from the lesions' rims
        adc_mim, s0_mim = rng.uniform(950, 1300), rng.uniform(1.8, 2.5)
    else:
        adc_mim, s0_mim = rng.uniform(1600, 2600), rng.uniform(1.5, 2.0)
    # Fine tissue texture (v1.1, wider in v1.2): real ADC/DWI maps vary a lot within normal tissue
    # (ISLES'22 case: 5 % of parenchyma has ADC < 560; DWI p95/p50 ~1.25 above the skull base), which a rule
    # mistakes for lesions and a model must not.
    tex_adc = 1 + _smooth_field(rng, shape, rng.uniform(0.2, 0.45), 2.5 / vs.mean())
    tex_s0 = 1 + _smooth_field(rng, shape, rng.uniform(0.12, 0.35), 2.5 / vs.mean())
    return {
        "adc_gm": adc_gm * tex_adc,
        "adc_wm": adc_wm * tex_adc,
        "adc_csf": adc_csf,
        "adc_les": adc_les,
        "adc_mim": adc_mim,
        "s0_gm": s0_gm * tex_s0,
        "s0_wm": s0_wm * tex_s0,
        "s0_csf": s0_csf,
        "s0_scalp": s0_scalp,
        "s0_les": s0_les,
        "s0_mim": s0_mim,
    }


def acquire(rng: np.random.Generator, acq, grid: Grid, tissue: Tissue, les: Lesions) -> Signals:
    """The noisy b0, b1000 (the DWI), the scanner's ADC and (``acq.with_flair``) a FLAIR of one case.

    ``acq`` is the case's :class:`stroke_seg.synthetic.generator.Acquisition`.
    """
    p = _tissue_properties(rng, grid, tissue, les)
    shape, vs, csf = grid.shape, grid.vs, tissue.csf
    S0 = les.f_gm * p["s0_gm"] + les.f_wm * p["s0_wm"] + csf * p["s0_csf"] + les.f_les * p["s0_les"]
    S0 = S0 + les.f_mim * p["s0_mim"]
    S = (
        les.f_gm * _sig(p["s0_gm"], p["adc_gm"])
        + les.f_wm * _sig(p["s0_wm"], p["adc_wm"])
        + csf * _sig(p["s0_csf"], p["adc_csf"])
        + les.f_les * _sig(p["s0_les"], p["adc_les"])
        + les.f_mim * _sig(p["s0_mim"], p["adc_mim"])
    )
    if not acq.skull_stripped:
        adc_scalp = rng.uniform(600, 1400)
        S0 = S0 + tissue.scalp * p["s0_scalp"]
        S = S + tissue.scalp * _sig(p["s0_scalp"], adc_scalp)
    # Skull-base effects (v1.2), never lesions: the posterior fossa and temporal lobes are brighter on
    # real DWI (ISLES'22 case: parenchyma DWI / brain median 1.36-1.55 in the lowest slices vs ~1.08 above),
    # and susceptibility artefacts next to air and bone (temporal poles, orbitofrontal, mastoid) make
    # bright spots whose ADC is normal or raised. Applied to both b=0 and b=1000 signals.
    S0_gain, S_gain = _skull_base_gain(rng, grid.mni_affine, shape)
    S0, S = S0 * S0_gain, S * S_gain
    bias = np.exp(_smooth_field(rng, shape, acq.bias, 60 / vs.mean()))
    sigma = acq.noise * _sig(p["s0_gm"], p["adc_gm"])
    S0n, Sn = rician(rng, S0 * bias, sigma, shape), rician(rng, S * bias, sigma, shape)
    background = S0n < 0.25 * p["s0_wm"]
    adc = np.where(background, 0.0, np.log(np.maximum(S0n, 1e-6) / np.maximum(Sn, 1e-6)) / B_VALUE * 1e6)
    adc = np.clip(adc, 0, 4000).astype(np.float32)
    if acq.adc_background == "brain":
        adc = np.where(tissue.brain > 0.5, adc, 0.0).astype(np.float32)
    elif acq.adc_background != "air":
        raise ValueError(f'adc_background must be "air" or "brain", but it is {acq.adc_background!r}')
    flair = _flair(rng, acq, tissue, les, bias, sigma) if acq.with_flair else None
    dwi, b0 = Sn, S0n
    if acq.skull_stripped:
        keep = tissue.brain > 0.5
        dwi, adc, b0 = np.where(keep, dwi, 0), np.where(keep, adc, 0), np.where(keep, b0, 0)
        flair = np.where(keep, flair, 0) if flair is not None else None
    return Signals(dwi, b0, adc, flair)


def _flair(rng: np.random.Generator, acq, tissue: Tissue, les: Lesions, bias, sigma) -> np.ndarray:
    """A FLAIR-like image: CSF dark, acute lesions slightly bright, shine-through mimics bright."""
    F = (
        les.f_gm * 1.0
        + les.f_wm * 0.8
        + tissue.csf * 0.12
        + les.f_les * rng.uniform(1.0, 1.25)
        + les.f_mim * (1.6 if les.mimic_kind == "shine_through" else 0.3)
    )
    if not acq.skull_stripped:
        F = F + tissue.scalp * 0.9
    return rician(rng, F * bias, sigma, tissue.csf.shape)
