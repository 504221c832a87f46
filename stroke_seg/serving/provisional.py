"""A job's provisional answers (a model that averages several networks: DeepISLES after each checkpoint), written
where the app can show them before the final result.

Each answer goes into the job's own ``.provisional-*`` folder under the result cache's root (served like the
results; swept with them after the cache's lifetime): its mask, an overlay montage, and, once, copies of the DWI and
ADC for the viewer. The folder is deleted when the job's final result is committed, and kept when the job is
cancelled, fails or times out, so that what the user was shown stays shown, labelled provisional.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stroke_seg.io.case import save_image
from stroke_seg.report import render
from stroke_seg.types import Case, Provisional

__all__ = ["ProvisionalWriter"]

log = logging.getLogger(__name__)


class ProvisionalWriter:
    """Writes one job's provisional answers into a folder of ``root`` (made at the first answer)."""

    def __init__(self, root: Path, case: Case, files: dict[str, str | None]) -> None:
        self.root, self.case, self.files = root, case, files
        self.folder: Path | None = None

    def _inputs(self) -> dict[str, Path]:
        """The DWI and ADC as the viewer shows them: the uploads as they are, or (converted DICOM) the validated
        volumes."""
        paths = {}
        for name, data in (("dwi", self.case.dwi), ("adc", self.case.adc)):
            given = self.files.get(name)
            if given:
                suffix = ".nii.gz" if str(given).lower().endswith(".gz") else ".nii"
                paths[name] = self.folder / f"{name}{suffix}"
                if not paths[name].is_file():
                    shutil.copyfile(given, paths[name])
            else:
                paths[name] = self.folder / f"{name}.nii.gz"
                if not paths[name].is_file():
                    save_image(data, self.case, paths[name], dtype=np.float32)
        return paths

    def write(self, provisional: Provisional) -> dict[str, Any]:
        """Write ``provisional``; returns its description (:meth:`Provisional.to_dict`) with the paths of its
        ``mask``, ``montage``, ``dwi`` and ``adc`` files."""
        if self.folder is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix=".provisional-", dir=self.root))
        stem = f"provisional_{provisional.done:02d}_of_{provisional.total:02d}"
        mask = np.asarray(provisional.mask.dataobj) > 0
        mask_path = self.folder / f"{stem}_mask.nii.gz"
        save_image(mask.astype(np.uint8), self.case, mask_path)
        montage = render.save_png(render.result_montage(self.case, mask), self.folder / f"{stem}_montage.png")
        return provisional.to_dict() | {"mask": mask_path, "montage": Path(montage)} | self._inputs()

    def discard(self) -> None:
        """Delete the answers (the final result replaced them)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
