"""Shared fixtures: tiny synthetic volumes built in tmp_path, and the strict-skip helper."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CASE = ROOT.parent / "shared" / "data" / "isles22-strokecase0001"
STRICT = os.environ.get("STROKE_SEG_STRICT") == "1"
# The generator's plain raw cases are brains in noise with no head around them, which HD-BET (trained on heads)
# misplaces and the plausibility check then hands to the morphological mask (README, "Brain extraction"): the tests
# whose subject is not brain extraction use that mask directly, here and in the apps and CLIs they start. Tests
# marked ``hd_bet_default`` run the product's default (HD-BET); those about brain extraction name their extractor.
os.environ["STROKE_SEG_BRAIN_EXTRACTOR"] = "morphology"
# gradio_client opens a new httpx client, so a new SSL context, for every request it makes (config, each upload, each
# job's stream, each download), plain http included, and httpx loads certifi's whole bundle into each (25-50 ms of
# CPU). The tests only speak plain http to loopback; the system's hashed CA folder, which OpenSSL reads lazily, makes
# each context about free. An operator's own SSL_CERT_FILE / SSL_CERT_DIR is left alone.
if not (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")) and Path("/etc/ssl/certs").is_dir():
    os.environ["SSL_CERT_DIR"] = "/etc/ssl/certs"


@pytest.fixture(autouse=True)
def _product_brain_extractor(request, monkeypatch):
    if request.node.get_closest_marker("hd_bet_default"):
        monkeypatch.delenv("STROKE_SEG_BRAIN_EXTRACTOR")


REPORT_KEYS = (
    "model",
    "lesion_volume_ml",
    "lesion_count",
    "lesions",
    "timings",
    "dice",
    "avd_ml",
    "lesion_f1",
    "lesion_count_diff",
)
"""Keys every JSON report of a case with a ground truth holds."""


def require(condition: bool, reason: str) -> None:
    """Skip with ``reason`` when ``condition`` is false, or fail when STROKE_SEG_STRICT=1 (CI).

    Every skip of the suite goes through here (``pytest.importorskip`` and ``skipif`` would bypass strict mode); at
    module level it skips the whole module, or fails its collection in strict mode.
    """
    if not condition:
        if STRICT:
            pytest.fail(f"STROKE_SEG_STRICT=1 forbids this skip: {reason}")
        pytest.skip(reason, allow_module_level=True)


def require_module(name: str) -> ModuleType:
    """``import name``, or :func:`require` it: skip, or fail in strict mode, when it is not installed.

    Only a missing module itself counts; an ``ImportError`` raised inside an installed module propagates.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name and not name.startswith(f"{err.name}."):
            raise
        require(False, f"the {name} package is not installed")
        raise  # not reached: require skipped or failed


def require_dicom_tools() -> None:
    """pydicom, highdicom and dcm2niix, or :func:`require` them."""
    from stroke_seg.errors import InvalidImageError

    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401

        from stroke_seg.io.dicom import dcm2niix_path

        dcm2niix_path()
    except (ImportError, InvalidImageError) as err:
        require(False, f"DICOM tools missing: {err}")


def phantom(shape=(40, 44, 36), lesion_center=(24, 22, 18), radius=4.0, seed=0):
    """A small skull-stripped head phantom: ellipsoid brain (DWI ~100, ADC ~800 x1e-6) with one acute lesion, zeros
    outside the brain (as ISLES'22 releases; a raw head with skull comes from :mod:`stroke_seg.synthetic`).

    Returns (dwi, adc, truth) arrays of ``shape`` (float32, float32, bool).
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), -1)
    c = (np.asarray(shape) - 1) / 2
    brain = (((grid - c) / (np.asarray(shape) * 0.42)) ** 2).sum(-1) <= 1
    truth = ((grid - np.asarray(lesion_center)) ** 2).sum(-1) <= radius**2
    dwi = np.where(brain, 100.0, 0.0) + rng.normal(0, 2, shape)
    dwi = np.where(truth, 200.0, np.where(brain, dwi, 0.0))
    adc = np.where(brain, 800.0, 0.0) + np.where(brain, rng.normal(0, 20, shape), 0)
    adc = np.where(truth, 420.0, adc)
    return dwi.astype(np.float32), adc.astype(np.float32), truth & brain


def save(path: Path, data, affine=None, dtype=None) -> Path:
    data = np.asarray(data)
    img = nib.Nifti1Image(data.astype(dtype or data.dtype), np.eye(4) * [2, 2, 2, 1] if affine is None else affine)
    nib.save(img, str(path))
    return path


@pytest.fixture
def phantom_files(tmp_path):
    """dwi/adc/mask .nii.gz files of :func:`phantom` on a 2 mm RAS grid."""
    dwi, adc, truth = phantom()
    return {
        "dwi": save(tmp_path / "dwi.nii.gz", dwi),
        "adc": save(tmp_path / "adc.nii.gz", adc),
        "ground_truth": save(tmp_path / "mask.nii.gz", truth.astype(np.uint8)),
    }


def check_result_rules(result, dwi_brain_median: float | None) -> None:
    """The postconditions of a :class:`stroke_seg.Result`: every lesion of its mask (26-connected, input grid) obeys
    the rules its report states (at least ``min_lesion_ml``, median ADC at most ``max_lesion_adc``, mean DWI above the
    brain median), or, for a backend that keeps its own mask, a warning says which do not; and the report's lesion
    table lists exactly the mask's components. Raises AssertionError naming what broke."""
    from scipy import ndimage as ndi

    from stroke_seg.models import get_model
    from stroke_seg.models.base import CaseBackend
    from stroke_seg.pipeline.metrics import voxel_volume_ml
    from stroke_seg.pipeline.postprocess import lesion_rule_violations, lesion_rules

    mask = np.asarray(result.mask.dataobj) > 0
    case = result.case
    voxel_ml = voxel_volume_ml(case.affine)
    found = lesion_rule_violations(mask, case.dwi, case.adc, voxel_ml, lesion_rules(result.config, dwi_brain_median))
    try:
        own_mask = isinstance(get_model(result.model), CaseBackend)
    except Exception:  # noqa: BLE001 - a stand-in name the registry does not know keeps the strict rule
        own_mask = False
    if own_mask:
        if found and not any("break the lesion rules" in w for w in result.warnings):
            raise AssertionError(f"{result.model}: {len(found)} lesions break the rules and no warning says so")
    elif found:
        raise AssertionError(f"{result.model}: {len(found)} output lesions break the lesion rules: {found[:5]}")
    labels, n = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = sorted(np.bincount(labels.ravel())[1:].tolist(), reverse=True)
    table = sorted((les.voxels for les in result.metrics.lesions), reverse=True)
    if result.metrics.count != n or table != sizes:
        raise AssertionError(
            f"the lesion table ({result.metrics.count} rows, voxels {table[:8]}) is not the mask's {n} components "
            f"(voxels {sizes[:8]})"
        )


@pytest.fixture(autouse=True)
def _every_result_obeys_the_lesion_rules(monkeypatch):
    """Check :func:`check_result_rules` on every Result that ``stroke_seg.api.segment`` builds in this process (the
    brain median comes from the same call's preprocessing), whichever door called it. Test-side only."""
    import threading

    import stroke_seg.api as api

    seen = threading.local()
    real_preprocess, real_result = api.preprocess, api.Result

    def preprocess(case, **kwargs):
        volumes = real_preprocess(case, **kwargs)
        seen.median = volumes.dwi_median
        return volumes

    def result(**fields):
        out = real_result(**fields)
        check_result_rules(out, getattr(seen, "median", None))
        return out

    monkeypatch.setattr(api, "preprocess", preprocess)
    monkeypatch.setattr(api, "Result", result)


# --- CPU seconds per test (this process and the children it waited for), for trimming the suite on a loaded machine
_CPU_LOG = os.environ.get("STROKE_SEG_TEST_CPU_LOG")


def _cpu_seconds() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _CPU_LOG:
        yield
        return
    import time

    cpu, wall = _cpu_seconds(), time.monotonic()
    yield
    with open(_CPU_LOG, "a") as log:
        log.write(f"{_cpu_seconds() - cpu:.2f}\t{time.monotonic() - wall:.2f}\t{item.nodeid}\n")


def pytest_configure(config):
    """The test process takes the memory settings of the app, the CLI and the Dask workers (freed memory kept, no
    huge page advice: :mod:`stroke_seg.serving.memory`): the suite runs the library as it is served."""
    from stroke_seg.serving.memory import keep_freed_memory

    keep_freed_memory()
