"""On-disk cache of finished results, keyed by the input files' content + model + options.

An entry is a folder ``<root>/<key>/`` holding the outputs; it becomes visible atomically (written
to a temporary folder, then renamed). Two lifetimes, on purpose distinct:

* ``ttl_s``: how long an entry may be *reused* for a request with identical inputs (0: never reused);
* ``keep_s``: how long it stays on disk at least, so the client that asked for it can download it whatever the
  TTL (the sweep deletes entries older than ``max(ttl_s, keep_s)``).

Finished results thus survive a dropped connection: resubmitting the same case returns them at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from stroke_seg.io.digest import update_with_file

__all__ = ["ResultCache", "default_cache_dir", "DELIVERY_S"]

log = logging.getLogger(__name__)

DELIVERY_S = 900.0
"""Default ``keep_s``: seconds a finished result stays downloadable by the client that asked for it."""


def default_cache_dir() -> Path:
    """``$STROKE_SEG_CACHE_DIR`` or ``<system temp>/stroke-seg-cache`` (writable on HF Spaces)."""
    return Path(os.environ.get("STROKE_SEG_CACHE_DIR") or Path(tempfile.gettempdir()) / "stroke-seg-cache")


class ResultCache:
    """Folders of finished results under ``root``: reused for ``ttl_s`` seconds, kept for at least ``keep_s``.

    Args:
        root: cache folder (created).
        ttl_s: seconds an entry may be reused for identical inputs; 0 disables reuse.
        keep_s: seconds an entry stays on disk at least (download window of its own request).
    """

    DONE = "report.json"  # an entry is complete when this file exists

    @classmethod
    def from_env(cls) -> ResultCache:
        """A cache configured by ``STROKE_SEG_CACHE_DIR``, ``STROKE_SEG_CACHE_TTL`` (3600) and
        ``STROKE_SEG_RESULT_KEEP`` (:data:`DELIVERY_S`)."""
        env = os.environ.get
        return cls(
            default_cache_dir(),
            float(env("STROKE_SEG_CACHE_TTL", "3600")),
            float(env("STROKE_SEG_RESULT_KEEP", DELIVERY_S)),
        )

    def __init__(self, root: str | Path, ttl_s: float = 3600.0, keep_s: float = DELIVERY_S) -> None:
        if ttl_s < 0 or keep_s < 0:
            raise ValueError(f"ttl_s and keep_s must be >= 0 seconds, but they are {ttl_s} and {keep_s}")
        self.root = Path(root)
        self.ttl_s = float(ttl_s)
        self.keep_s = float(keep_s)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def lifetime_s(self) -> float:
        """Seconds an entry stays on disk: ``max(ttl_s, keep_s)``."""
        return max(self.ttl_s, self.keep_s)

    @staticmethod
    def key(files: Iterable[str | Path | None], *options: str) -> str:
        """SHA-256 over the bytes of each file (None for an absent input) and the option strings."""
        h = hashlib.sha256()
        for f in files:
            if f is None:
                h.update(b"\x00none\x00")
                continue
            update_with_file(h, f)
            h.update(b"\x00file\x00")
        for opt in options:
            h.update(opt.encode() + b"\x00")
        return h.hexdigest()[:32]

    def get(self, key: str) -> Path | None:
        """The entry folder when it is complete and fresh, else None."""
        folder = self.root / key
        if (folder / self.DONE).is_file() and time.time() - folder.stat().st_mtime < self.ttl_s:
            return folder
        return None

    def staging(self) -> Path:
        """A new empty folder to write an entry into, then :meth:`commit` it."""
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def commit(self, staging: Path, key: str) -> Path:
        """Move a written staging folder into place (atomic rename); the first writer wins."""
        target = self.root / key
        try:
            os.rename(staging, target)
        except OSError:  # another job finished the same key first
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def sweep(self) -> int:
        """Delete entries (and abandoned staging folders) older than :attr:`lifetime_s`; returns how many."""
        now, removed = time.time(), 0
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            try:
                if folder.is_dir() and now - folder.stat().st_mtime >= self.lifetime_s:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("cache: removed %d expired entries from %s", removed, self.root)
        return removed
