"""SHA-256 of files, streamed (weights checksums, result-cache keys)."""

from __future__ import annotations

import hashlib
import os

__all__ = ["update_with_file", "file_sha256"]

CHUNK = 1 << 20


def update_with_file(h: hashlib._Hash, path: str | os.PathLike) -> None:
    """Feed a file's bytes into ``h`` in 1 MiB chunks."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    update_with_file(h, path)
    return h.hexdigest()
