"""The weights of DeepISLES' NVAUTO algorithm: the 15 TorchScript checkpoints of Zenodo record 16920681, found
(``$STROKE_SEG_DEEPISLES_WEIGHTS``, else the ``stroke_segmentor`` package's own download cache), checked and
fingerprinted (SHA-256 of each file and of the set)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from stroke_seg.errors import ModelError
from stroke_seg.types import ProgressCallback

__all__ = [
    "NAME",
    "RECORD_ID",
    "CHECKPOINTS",
    "WEIGHTS_ENV",
    "GET_WEIGHTS",
    "WeightSet",
    "check_weights",
    "find_weights",
]

log = logging.getLogger(__name__)

NAME = "deepisles-nvauto"
RECORD_ID = "16920681"
CHECKPOINTS = tuple(f"model{i}.ts" for i in range(15))
WEIGHTS_ENV = "STROKE_SEG_DEEPISLES_WEIGHTS"
GET_WEIGHTS = (
    f"download the archive of Zenodo record {RECORD_ID} (https://zenodo.org/records/{RECORD_ID}), unpack it and set "
    f"{WEIGHTS_ENV} to the folder holding {CHECKPOINTS[0]} ... {CHECKPOINTS[-1]}"
)


class WeightSet:
    """A checked weights folder: the checkpoint paths, the SHA-256 of each (``file_sha256``, same order; empty when
    not computed) and one SHA-256 over the set (file name + content)."""

    def __init__(self, folder: Path, files: tuple[Path, ...], sha256: str, file_sha256: tuple[str, ...] = ()) -> None:
        self.folder, self.files, self.sha256, self.file_sha256 = folder, files, sha256, file_sha256

    def key(self, index: int) -> str:
        """What identifies checkpoint ``index`` (its own SHA-256, else the set's and its index) in engine caches."""
        return self.file_sha256[index][:24] if self.file_sha256 else f"{self.sha256[:16]}-{index}"

    def details(self) -> dict[str, Any]:
        return {"weights_checkpoints": len(self.files), "weights_sha256": self.sha256}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_weights(folder: Path) -> WeightSet:
    """The checkpoint set in ``folder`` (never modified).

    Raises:
        ModelError: the folder or one of ``model0.ts`` ... ``model14.ts`` is missing or empty (named).
    """
    if not folder.is_dir():
        raise ModelError(f"{NAME} weights: expected a folder holding {CHECKPOINTS[0]} ... {CHECKPOINTS[-1]}, but "
                         f"{folder} is not a folder; {GET_WEIGHTS}")  # fmt: skip
    files = tuple(folder / name for name in CHECKPOINTS)
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise ModelError(
            f"{NAME} weights: checkpoint {missing[0]} is missing from {folder} ({len(missing)} of {len(CHECKPOINTS)} "
            f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); {GET_WEIGHTS}"
        )
    empty = [p.name for p in files if p.stat().st_size == 0]
    if empty:
        raise ModelError(f"{NAME} weights: checkpoint {empty[0]} in {folder} is empty (a broken download?); "
                         f"{GET_WEIGHTS}")  # fmt: skip
    each = tuple(_file_sha256(p) for p in files)
    digest = hashlib.sha256()
    for p, sha in zip(files, each):
        digest.update(f"{p.name}:{sha}\n".encode())
    return WeightSet(folder, files, digest.hexdigest(), each)


def _cached_folder(root: Path) -> Path | None:
    """The newest ``<record>_v<version>`` folder the package downloaded before, holding the checkpoints."""

    def version(p: Path) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in p.name.split("_v", 1)[1].split("."))
        except (IndexError, ValueError):
            return ()

    found = [p for p in root.glob(f"{RECORD_ID}_v*") if (p / CHECKPOINTS[0]).is_file()]
    return max(found, key=version) if found else None


def _zenodo_reachable(timeout_s: float = 10.0) -> bool:
    try:
        import requests

        return requests.get(f"https://zenodo.org/api/records/{RECORD_ID}", timeout=timeout_s).status_code == 200
    except Exception:  # noqa: BLE001 - any failure means "offline" here
        return False


def find_weights(report: ProgressCallback) -> Path:
    """The weights folder: ``$STROKE_SEG_DEEPISLES_WEIGHTS`` as given, else the package's download cache.

    Without the variable, Zenodo is asked first (10 s timeout): reachable, the package's own ``fetch_weights``
    downloads or updates its cache (reported as a stage); unreachable, the newest cached download is used, and with
    none a :class:`ModelError` says how to get the weights.
    """
    given = os.environ.get(WEIGHTS_ENV)
    if given:
        return Path(given).expanduser()
    from stroke_segmentor import zenodo

    cached = _cached_folder(zenodo.WEIGHTS_FOLDER)
    report(0.0, f"weights: asking Zenodo for record {RECORD_ID}")
    if not _zenodo_reachable():
        if cached is not None:
            log.info("%s: Zenodo unreachable; using the cached weights %s", NAME, cached)
            return cached
        raise ModelError(
            f"{NAME} weights are not on this machine and Zenodo could not be reached: expected "
            f"{CHECKPOINTS[0]} ... {CHECKPOINTS[-1]} in {WEIGHTS_ENV} or in the package's cache "
            f"{zenodo.WEIGHTS_FOLDER}; {GET_WEIGHTS}"
        )
    if cached is None:
        report(0.0, f"weights: downloading Zenodo record {RECORD_ID} (first use only; the 15 checkpoints)")
    else:
        report(0.0, f"weights: checking the cached download against Zenodo record {RECORD_ID}")
    try:
        return Path(zenodo.fetch_weights())
    except Exception as err:  # noqa: BLE001 - ZenodoException, requests errors, a broken archive
        if cached is not None:
            log.warning("%s: weights download failed (%s); using the cached weights %s", NAME, err, cached)
            return cached
        raise ModelError(f"{NAME} weights: the download from Zenodo failed ({err}); {GET_WEIGHTS}") from err
