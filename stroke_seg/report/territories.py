"""The Johns Hopkins arterial territories atlas, shipped as package data, and look-ups in MNI152 space.

Liu C-F, Hsu J, Xu X, et al. Digital 3D Brain MRI Arterial Territories Atlas. Scientific Data 10, 74 (2023),
doi:10.1038/s41597-022-01923-0; built from the DWI lesions of 1,298 acute stroke patients; CC BY-SA 4.0
(``atlas/LICENSE``, ``atlas/CITATION.md``). Level 1 has 30 arterial territories plus the two lateral ventricles;
level 2 groups them into ACA, MCA, PCA and vertebrobasilar (VB) per side.

The files store a plain 1 mm identity affine. Their grid is the 181 x 217 x 181 MNI152 grid in radiological storage:
:data:`ATLAS_TO_MNI` (x = 90 - i, y = j - 126, z = k - 72 mm) puts the atlas's brain on the brain mask of the MNI152
template nilearn ships with Dice 0.96 (the best integer shift; ``tests/test_report.py`` checks it) and every left label
at x < 0.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = [
    "ATLAS_DIR",
    "ATLAS_TO_MNI",
    "TERRITORIES",
    "Territory",
    "territory_table",
    "Atlas",
    "load_atlas",
    "CITATION",
]

ATLAS_DIR = Path(__file__).with_name("atlas")
"""Folder of the atlas files (package data)."""

ATLAS_TO_MNI = np.array([[-1.0, 0.0, 0.0, 90.0], [0.0, 1.0, 0.0, -126.0], [0.0, 0.0, 1.0, -72.0], [0.0, 0.0, 0.0, 1.0]])
"""Atlas voxel (i, j, k) to MNI152 mm (RAS: x > 0 is the patient's right)."""

TERRITORIES = ("ACA", "MCA", "PCA", "VB")
"""The level-2 vascular territories, either side."""

CITATION = (
    "Liu C-F, Hsu J, Xu X, et al. Digital 3D Brain MRI Arterial Territories Atlas. "
    "Scientific Data 10, 74 (2023). doi:10.1038/s41597-022-01923-0 (CC BY-SA 4.0)"
)

# Level-1 abbreviation stem -> (territory of level 2, the region it supplies: lobe or deep structure). The region is
# the atlas's own territory name said in anatomical words (the paper's Table 1); no region is drawn here.
_REGIONS = {
    "ACA": "anterior cerebral artery cortex (medial frontal and parietal lobes)",
    "MLS": "medial lenticulostriate (caudate head, anterior internal capsule)",
    "LLS": "lateral lenticulostriate (basal ganglia, internal capsule, corona radiata)",
    "MCAF": "frontal lobe (MCA)",
    "MCAP": "parietal lobe (MCA)",
    "MCAT": "temporal lobe (MCA)",
    "MCAO": "occipital lobe (MCA)",
    "MCAI": "insula (MCA)",
    "PCAT": "temporal lobe (PCA: medial and inferior)",
    "PCAO": "occipital lobe (PCA)",
    "PCTP": "thalamus (posterior choroidal and thalamoperforators)",
    "ACTP": "internal capsule and thalamus (anterior choroidal and thalamoperforators)",
    "B": "brainstem (basilar perforators)",
    "SC": "cerebellum, superior (superior cerebellar artery)",
    "IC": "cerebellum, inferior (inferior cerebellar arteries)",
    "LV": "lateral ventricle",
}


@dataclass(frozen=True)
class Territory:
    """One level-1 label of the atlas.

    Attributes:
        label: its intensity in ``ArterialAtlas.nii.gz`` (1-32).
        name: the published name, e.g. "lateral lenticulostriate left".
        side: "left" or "right".
        territory: level-2 group: "ACA", "MCA", "PCA", "VB" or "ventricle".
        region: the lobe or deep structure it supplies, in words.
    """

    label: int
    name: str
    side: str
    territory: str
    region: str


def _region(stem: str) -> str:
    for key in sorted(_REGIONS, key=len, reverse=True):
        if stem.startswith(key):
            return _REGIONS[key]
    raise ValueError(f"atlas label table: expected a known abbreviation, but got {stem!r}")


@functools.lru_cache(maxsize=1)
def territory_table() -> dict[int, Territory]:
    """The level-1 labels of ``ArterialAtlasLables.txt``, by intensity; the level-2 group is read by intensity (the
    published table's level-2 text has typos)."""
    level2_group = {1: "ACA", 2: "ACA", 3: "MCA", 4: "MCA", 5: "PCA", 6: "PCA", 7: "VB", 8: "VB", 9: "ventricle"}
    level2_group[10] = "ventricle"
    out: dict[int, Territory] = {}
    for line in (ATLAS_DIR / "ArterialAtlasLables.txt").read_text(encoding="utf-8", errors="replace").splitlines():
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) < 4 or not cells[1].isdigit() or not cells[3].isdigit():
            continue
        name, label, abbrev, level2 = cells[0], int(cells[1]), cells[2], int(cells[3])
        side = "left" if name.endswith("left") else "right" if name.endswith("right") else ""
        if not side or level2 not in level2_group:
            raise ValueError(f"atlas label table: expected '<name> left|right' with a level-2 label 1-10, got {line!r}")
        stem = abbrev[:-1] if abbrev[-1] in "LR" else abbrev
        out[label] = Territory(label, name, side, level2_group[level2], _region(stem))
    if len(out) != 32:
        raise ValueError(f"atlas label table: expected 32 level-1 labels, but found {len(out)}")
    return out


@dataclass(frozen=True, eq=False)
class Atlas:
    """The level-1 atlas array (i, j, k) with its voxel-to-MNI affine.

    Attributes:
        level1: int16 array (181, 217, 181), 0 outside the brain.
        affine: 4x4 voxel-to-MNI mm (:data:`ATLAS_TO_MNI`).
    """

    level1: np.ndarray
    affine: np.ndarray

    def labels_at(self, mni_mm: np.ndarray) -> np.ndarray:
        """Level-1 label (0: outside the atlas) at each (N, 3) MNI point, nearest voxel."""
        pts = np.atleast_2d(np.asarray(mni_mm, np.float64))
        ijk = np.rint((pts - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.array(self.level1.shape)), axis=1)
        out = np.zeros(len(pts), np.int16)
        i, j, k = ijk[inside].T
        out[inside] = self.level1[i, j, k]
        return out


@functools.lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """The shipped level-1 atlas (read once per process, about 0.2 s)."""
    img = nib.load(str(ATLAS_DIR / "ArterialAtlas.nii.gz"))
    data = np.asarray(img.dataobj, dtype=np.int16)
    if data.shape != (181, 217, 181):
        raise ValueError(f"arterial atlas: expected a 181 x 217 x 181 grid, but it is {data.shape}")
    return Atlas(level1=data, affine=ATLAS_TO_MNI.copy())
