"""Synthetic lesions: unions of perturbed ellipsoids in world (MNI) mm, placed in deep parenchyma by pattern.

Patterns (:data:`LESION_PATTERNS`): territorial (MCA-like), lacunar, emboli, posterior; mimics that must not be called
lesions (:data:`MIMIC_PATTERNS`): T2 shine-through and an old infarct. :func:`place_lesions` renders them on a case's
grid with supersampling (the fraction of each voxel inside the shapes) and the ground truth (voxels at least half
acute infarct).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stroke_seg.synthetic.head import Grid, Tissue, _rotation, _template

LESION_PATTERNS = ("territorial", "lacunar", "emboli", "posterior")
MIMIC_PATTERNS = ("shine_through", "old_infarct")


@dataclass(frozen=True, eq=False)
class Lesions:
    """Lesion and mimic fractions on a case's grid (float32, (X, Y, Z)) and the ground truth (bool)."""

    les_depth: np.ndarray  # normalised depth in the acute lesions: 0 centre, 1 edge
    is_mild: np.ndarray  # voxels of mildly restricted lesions
    mimic_kind: str
    f_les: np.ndarray
    f_mim: np.ndarray
    f_gm: np.ndarray
    f_wm: np.ndarray
    truth: np.ndarray


@dataclass(frozen=True)
class _Blob:
    center: np.ndarray  # (3,) mm
    radii: np.ndarray  # (3,) mm
    rot: np.ndarray  # (3, 3)
    wave_k: np.ndarray  # (3,) rad/mm
    wave_phase: float
    wave_amp: float


def _blob(rng: np.random.Generator, center, radius_range, elong=(0.7, 1.4)) -> _Blob:
    r = rng.uniform(*radius_range)
    radii = r * rng.uniform(*elong, size=3)
    k = rng.normal(size=3)
    k *= (2 * math.pi / (1.6 * r)) / np.linalg.norm(k)
    return _Blob(
        np.asarray(center, float),
        radii,
        _rotation(rng.uniform(-90, 90, 3)),
        k,
        float(rng.uniform(0, 2 * math.pi)),
        float(rng.uniform(0.1, 0.3)),
    )


def _near(rng: np.random.Generator, point, radius: float, side: int | None = None) -> np.ndarray:
    """A random deep-parenchyma position within ``radius`` mm of ``point`` (same hemisphere)."""
    cand = _template().parenchyma_mm
    d = np.linalg.norm(cand - np.asarray(point), axis=1)
    ok = d < radius
    if side is not None:
        ok &= cand[:, 0] * side > 4
    pool = cand[ok] if ok.any() else cand[np.argsort(d)[:50]]
    return pool[rng.integers(len(pool))].astype(float)


def _lesion_blobs(rng: np.random.Generator, pattern: str) -> list[_Blob]:
    side = int(rng.choice([-1, 1]))
    if pattern == "territorial":  # MCA-like: several large blobs in one lateral territory
        seed = _near(rng, (side * rng.uniform(30, 42), rng.uniform(-25, 15), rng.uniform(5, 30)), 12, side)
        return [_blob(rng, _near(rng, seed, 22, side), (8, 18)) for _ in range(rng.integers(3, 7))]
    if pattern == "lacunar":  # small deep infarct(s), basal ganglia / internal capsule / corona radiata
        c = _near(rng, (side * rng.uniform(15, 26), rng.uniform(-18, 10), rng.uniform(-2, 20)), 8, side)
        return [_blob(rng, c, (2.5, 7.0))] + (
            [_blob(rng, _near(rng, c, 25, side), (2.0, 4.0))] if rng.random() < 0.3 else []
        )
    if pattern == "emboli":  # many small cortical/subcortical lesions in one territory (or both sides)
        both = rng.random() < 0.4
        seed = _near(rng, (side * rng.uniform(25, 45), rng.uniform(-60, 30), rng.uniform(0, 45)), 15, side)
        blobs = []
        for _ in range(rng.integers(5, 31)):  # v1.2: more and smaller (ISLES'22 case: 35 lesions, most 1-10 voxels)
            s = int(rng.choice([-1, 1])) if both else side
            centre = _near(rng, seed * np.array([s * side, 1, 1]), 40, s)
            r = float(np.exp(rng.uniform(np.log(1.3), np.log(5.0))))
            blobs.append(_blob(rng, centre, (r, r)))
        return blobs
    if pattern == "posterior":  # cerebellar (PICA/SCA) or occipital (PCA)
        if rng.random() < 0.5:
            c = _near(rng, (side * rng.uniform(12, 32), rng.uniform(-75, -50), rng.uniform(-42, -25)), 12, side)
        else:
            c = _near(rng, (side * rng.uniform(8, 28), rng.uniform(-92, -70), rng.uniform(-2, 18)), 12, side)
        return [_blob(rng, _near(rng, c, 12, side), (5, 13)) for _ in range(rng.integers(1, 4))]
    return []


def _mimic_blobs(rng: np.random.Generator) -> list[_Blob]:
    c = _near(rng, (rng.uniform(-45, 45), rng.uniform(-60, 30), rng.uniform(-10, 40)), 30)
    return [_blob(rng, _near(rng, c, 10), (6, 14)) for _ in range(rng.integers(1, 3))]


def _render_blobs(
    blobs: list[_Blob], affine: np.ndarray, shape, sub: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of each voxel inside the union of blobs, and a normalised depth q (0 centre, 1 edge)."""
    frac = np.zeros(shape, np.float32)
    depth = np.ones(shape, np.float32)
    inv = np.linalg.inv(affine)
    offsets = [((np.arange(n) + 0.5) / n - 0.5) for n in sub]
    for b in blobs:
        reach = float(b.radii.max() * (1 + b.wave_amp) + 2 * np.abs(affine[:3, :3]).sum(0).max())
        corners = np.array(
            [
                [b.center[0] + dx, b.center[1] + dy, b.center[2] + dz]
                for dx in (-reach, reach)
                for dy in (-reach, reach)
                for dz in (-reach, reach)
            ]
        )
        vox = corners @ inv[:3, :3].T + inv[:3, 3]
        lo = np.clip(np.floor(vox.min(0)).astype(int), 0, np.array(shape))
        hi = np.clip(np.ceil(vox.max(0)).astype(int) + 1, 0, np.array(shape))
        if np.any(hi <= lo):
            continue
        grids = np.meshgrid(*[np.arange(lo[i], hi[i], dtype=np.float32) for i in range(3)], indexing="ij")
        acc = np.zeros(grids[0].shape, np.float32)
        q_centre = None
        for ox in offsets[0]:
            for oy in offsets[1]:
                for oz in offsets[2]:
                    pts = [grids[0] + ox, grids[1] + oy, grids[2] + oz]
                    world = [
                        affine[i, 0] * pts[0]
                        + affine[i, 1] * pts[1]
                        + affine[i, 2] * pts[2]
                        + affine[i, 3]
                        - b.center[i]
                        for i in range(3)
                    ]
                    local = [sum(b.rot[j, i] * world[j] for j in range(3)) / b.radii[i] for i in range(3)]
                    q = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)
                    wave = b.wave_amp * np.sin(
                        b.wave_k[0] * world[0] + b.wave_k[1] * world[1] + b.wave_k[2] * world[2] + b.wave_phase
                    )
                    acc += q + wave < 1.0
                    q_centre = q if q_centre is None else np.minimum(q_centre, q)
        acc /= len(offsets[0]) * len(offsets[1]) * len(offsets[2])
        sl = tuple(slice(lo[i], hi[i]) for i in range(3))
        frac[sl] = np.maximum(frac[sl], acc)
        depth[sl] = np.minimum(depth[sl], np.clip(q_centre, 0, 1))
    return frac, depth


def place_lesions(rng: np.random.Generator, pattern: str, grid: Grid, tissue: Tissue) -> Lesions:
    """Draw and render the lesions (and any mimic) of ``pattern`` on ``grid``."""
    vs, shape, mni_affine = grid.vs, grid.shape, grid.mni_affine
    lesion_sub = tuple(int(min(5, max(2, math.ceil(v / 1.01)))) for v in vs) if vs.max() > 1.01 else (1, 1, 1)
    blobs = _lesion_blobs(rng, pattern)
    # Lesion severity (v1.2): most blobs are acute core (ADC 300-500), but some small ones are only mildly
    # restricted (ADC 600-820) and bright on DWI mostly from their T2 rise, as many small lesions in real
    # scans are (ISLES'22 case: median ADC 754e-6 mm²/s inside the DeepISLES mask).
    p_mild = {"emboli": 0.35, "lacunar": 0.5, "posterior": 0.1}.get(pattern, 0.0)
    mild = rng.random(len(blobs)) < p_mild
    mild[:1] = False  # the first blob (the main or index lesion) is always an acute core
    les_frac, les_depth = _render_blobs([b for b, m in zip(blobs, mild) if not m], mni_affine, shape, lesion_sub)
    mild_frac = (
        _render_blobs([b for b, m in zip(blobs, mild) if m], mni_affine, shape, lesion_sub)[0]
        if mild.any()
        else np.zeros(shape, np.float32)
    )
    is_mild = mild_frac > les_frac
    les_frac = np.maximum(les_frac, mild_frac)
    has_mimic = pattern in MIMIC_PATTERNS or (pattern in LESION_PATTERNS and rng.random() < 0.25)
    mimic_kind = pattern if pattern in MIMIC_PATTERNS else str(rng.choice(MIMIC_PATTERNS))
    mim_frac = (
        _render_blobs(_mimic_blobs(rng), mni_affine, shape, lesion_sub)[0] if has_mimic else np.zeros(shape, np.float32)
    )
    mim_frac *= 1 - les_frac

    f_les = les_frac * tissue.par
    f_mim = mim_frac * tissue.par
    f_gm = tissue.gm * (1 - les_frac) * (1 - mim_frac)
    f_wm = tissue.wm * (1 - les_frac) * (1 - mim_frac)
    return Lesions(les_depth, is_mild, mimic_kind, f_les, f_mim, f_gm, f_wm, f_les >= 0.5)
