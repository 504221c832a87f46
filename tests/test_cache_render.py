from __future__ import annotations

import os
import struct
import time

import numpy as np

import stroke_seg
from stroke_seg.report import render
from stroke_seg.serving.cache import ResultCache

PNG = b"\x89PNG\r\n\x1a\n"


def _entry(cache: ResultCache, key: str):
    staging = cache.staging()
    (staging / "report.json").write_text("{}")
    return cache.commit(staging, key)


def test_key_depends_on_bytes_and_options(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    k = ResultCache.key([a, None], "unet", "fast")
    assert k == ResultCache.key([a, None], "unet", "fast")
    assert k != ResultCache.key([b, None], "unet", "fast")
    assert k != ResultCache.key([a, None], "unet", "accurate")
    assert k != ResultCache.key([a, a], "unet", "fast")


def test_get_commit_and_ttl_sweep(tmp_path):
    cache = ResultCache(tmp_path / "c", ttl_s=60, keep_s=30)
    folder = _entry(cache, "k1")
    assert cache.get("k1") == folder and cache.get("k2") is None
    old = time.time() - 120
    os.utime(folder, (old, old))
    assert cache.get("k1") is None  # expired
    assert cache.sweep() == 1 and not folder.exists()


def test_ttl_zero_means_no_reuse_but_the_result_stays_downloadable(tmp_path):
    cache = ResultCache(tmp_path / "c", ttl_s=0, keep_s=900)
    folder = _entry(cache, "k1")
    assert cache.get("k1") is None  # never reused for another request
    assert cache.sweep() == 0 and (folder / "report.json").is_file()  # but not deleted before its client downloads it
    old = time.time() - 901
    os.utime(folder, (old, old))
    assert cache.sweep() == 1 and not folder.exists()


def test_incomplete_entry_is_not_served(tmp_path):
    cache = ResultCache(tmp_path / "c")
    (cache.root / "k").mkdir()
    assert cache.get("k") is None


def test_montages_are_pngs(phantom_files):
    r = stroke_seg.segment(phantom_files, model="adc-threshold")
    mask = np.asarray(r.mask.dataobj) > 0
    assert render.result_montage(r.case, mask).startswith(PNG)
    assert render.input_montage(r.case).startswith(PNG)
    ks = render.pick_slices(r.case.dwi, mask, 6)
    assert all(np.any(mask[:, :, k]) for k in ks[1:-1])  # slices go through the lesion


def test_montage_shows_the_slices_asked_for(phantom_files):
    r = stroke_seg.segment(phantom_files, model="adc-threshold")
    mask = np.asarray(r.mask.dataobj) > 0
    width = lambda png: struct.unpack(">I", png[16:20])[0]  # noqa: E731  (IHDR width)
    one, three = (render.result_montage(r.case, mask, cols=6, slices=s) for s in ([10], [10, 12, 14]))
    assert width(three) > 2 * width(one)
