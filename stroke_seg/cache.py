"""On-disk cache of finished results, keyed by the input files' content + model + options.

An entry is a folder ``<root>/<key>/`` holding the outputs; it becomes visible atomically (written
to a temporary folder, then renamed) and is deleted once older than the TTL. Finished results thus
survive a dropped connection: resubmitting the same case returns them at once.
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

__all__ = ["ResultCache", "default_cache_dir"]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$STROKE_SEG_CACHE_DIR`` or ``<system temp>/stroke-seg-cache`` (writable on HF Spaces)."""
    return Path(os.environ.get("STROKE_SEG_CACHE_DIR") or Path(tempfile.gettempdir()) / "stroke-seg-cache")


class ResultCache:
    """Folders of finished results under ``root``, each kept ``ttl_s`` seconds.

    Args:
        root: cache folder (created).
        ttl_s: lifetime of an entry, seconds.
    """

    DONE = "report.json"  # an entry is complete when this file exists

    def __init__(self, root: str | Path, ttl_s: float = 3600.0) -> None:
        self.root = Path(root)
        self.ttl_s = float(ttl_s)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(files: Iterable[str | Path | None], *options: str) -> str:
        """SHA-256 over the bytes of each file (None for an absent input) and the option strings."""
        h = hashlib.sha256()
        for f in files:
            if f is None:
                h.update(b"\x00none\x00")
                continue
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
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
        """Delete entries (and abandoned staging folders) older than the TTL; returns how many."""
        now, removed = time.time(), 0
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            try:
                if folder.is_dir() and now - folder.stat().st_mtime >= self.ttl_s:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("cache: removed %d expired entries from %s", removed, self.root)
        return removed
