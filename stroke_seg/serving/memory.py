"""The memory settings of a serving process: freed memory is kept for the next job instead of being handed back at once,
and numpy does not ask for transparent huge pages (:func:`_no_huge_page_advice`).

glibc's ``malloc`` gives a freed block above its mmap threshold back to the kernel at once and trims the top of its
heaps, so every job of a long-running server faults its large arrays' pages in again; the next job's first touches
then depend on what the kernel is doing. Measured on the ISLES'22 case through the app on 2 cores (BENCHMARKS.md,
"App end to end"): the preprocessing stage took 0.29-0.81 s per job with the defaults and a steady 0.26-0.29 s with
blocks up to 32 MiB kept and 1 GiB of free heap kept before trimming. The price is memory: the process keeps up to
that much freed memory mapped between jobs.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
SETTINGS = ((M_MMAP_THRESHOLD, 32 * 1024**2), (M_TRIM_THRESHOLD, 1024**3), (M_TOP_PAD, 256 * 1024**2))
"""Blocks up to 32 MiB (glibc's largest threshold) come from the heap; 1 GiB of free heap is kept; heaps grow in 256 MiB
steps (address space, not memory, until touched)."""
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
SWITCH = "STROKE_SEG_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` to this process's glibc allocator (True when applied), and stop numpy's huge page advice
    (:func:`_no_huge_page_advice`).

    Left alone (False, logged) where the environment already sets one of glibc's ``MALLOC_*_`` variables (an
    operator's choice) or ``STROKE_SEG_KEEP_FREED_MEMORY=0`` (glibc's and numpy's defaults: nothing is changed), on a
    platform other than Linux, or with a C library without ``mallopt`` (musl).
    """
    if os.environ.get(SWITCH) == "0":
        log.info("allocator: left at glibc's and numpy's defaults (%s=0)", SWITCH)
        return False
    _no_huge_page_advice()
    chosen = [name for name in ENVIRONMENT if name in os.environ]
    if chosen:
        log.info("allocator: left as the environment sets it (%s)", ", ".join(chosen))
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        log.info("allocator: not glibc, left as it is")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = all(mallopt(param, value) == 1 for param, value in SETTINGS)
    log.info("allocator: freed memory kept between jobs (%s)", "applied" if applied else "refused by the C library")
    return applied


def _no_huge_page_advice() -> None:
    """Stop numpy from advising the kernel to back each array over 4 MB with transparent huge pages.

    Where the kernel compacts memory on such a fault (THP ``defrag`` set to ``madvise``, Debian's default), the first
    touches of every large array stall in the kernel; a raw 1 mm head spends seconds there (BENCHMARKS.md, "Memory
    settings"). ``NUMPY_MADVISE_HUGEPAGE`` in the environment (read by numpy itself) is left as set.
    """
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        log.info("numpy: huge page advice left as NUMPY_MADVISE_HUGEPAGE sets it")
        return
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy 1.x
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return
    _set_madvise_hugepage(False)
    log.info("numpy: no huge page advice for large arrays")
