"""Network engines: what runs a torch module on one window, chosen per device and mode.

* ``torch``: the module itself in float32 under ``inference_mode`` (the reference; always available; CUDA).
* ``openvino``: the module converted to OpenVINO and compiled for the CPU in float32 (precision set explicitly:
  OpenVINO would otherwise pick bfloat16 on CPUs that have it).
* ``openvino-bf16``: the same in bfloat16, on CPUs with native bf16 (AVX-512 BF16 or AMX); faster, and close to
  but not bit-equal with the reference (agreement in ``BENCHMARKS.md``; ``tests/test_engines.py`` checks it).

:func:`resolve_engine` picks one for ``"auto"``: CUDA runs ``torch``; a CPU runs :data:`AUTO_CPU` for the mode
(float32 OpenVINO in both: bf16 moves single voxels of small lesions on the 2 mm working grid), falling back to
``openvino`` where bf16 is asked for but not native and to ``torch`` where OpenVINO is not installed.
:func:`build_engine` converts once per process (the converted model is cached on disk under
:func:`default_cache_dir`, keyed by the weights' SHA-256 and the OpenVINO version) and compiles once per precision;
any failure there is logged and the torch reference is returned instead, never an error for the user;
:func:`record_engines` tells which engine actually ran.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from stroke_seg.types import ENGINE_NAMES

__all__ = [
    "AUTO_CPU",
    "Engine",
    "resolve_engine",
    "build_engine",
    "openvino_available",
    "openvino_cached",
    "native_bf16",
    "default_cache_dir",
    "record_engines",
]

log = logging.getLogger(__name__)

AUTO_CPU = {"fast": "openvino", "accurate": "openvino"}
"""The engine ``"auto"`` picks on a CPU, per mode (each meets the agreement rule of ``tests/test_engines.py``)."""

Engine = Callable[[torch.Tensor], torch.Tensor]
"""Maps a window batch (N, C, x, y, z) to logits (N, 1, x, y, z), float32, on the input's device."""

_lock = threading.Lock()
_compiled: dict[tuple[str, str], Engine] = {}
_ran = threading.local()  # .sets: the sets of the record_engines() blocks open in this thread


@contextlib.contextmanager
def record_engines() -> Iterator[set[str]]:
    """Collect the engines that actually ran in this thread inside the block, into the set it yields.

    An engine counts once it has computed a window, so a fallback (an OpenVINO engine that failed to build or to
    run, replaced by the torch reference) shows as ``{"torch"}``, not as the engine that was asked for.
    """
    seen: set[str] = set()
    sets = _ran.__dict__.setdefault("sets", [])
    sets.append(seen)
    try:
        yield seen
    finally:
        sets.pop()


def _recorded(name: str, engine: Engine) -> Engine:
    """``engine``, noting ``name`` in the open :func:`record_engines` sets of the thread after each window it runs."""

    def run(x: torch.Tensor) -> torch.Tensor:
        out = engine(x)
        for seen in getattr(_ran, "sets", ()):
            seen.add(name)
        return out

    return run


@functools.cache
def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def native_bf16() -> bool:
    """True when OpenVINO reports native bfloat16 on this CPU (AVX-512 BF16 or AMX); asked once per process."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no OpenVINO or no CPU plugin: no bf16
        return False


def resolve_engine(requested: str, device: torch.device, mode: str) -> str:
    """The engine to run: ``requested`` unless it is ``"auto"`` or cannot run here (then logged).

    Raises:
        ValueError: ``requested`` is not one of :data:`~stroke_seg.types.ENGINE_NAMES`.
    """
    if requested not in ENGINE_NAMES:
        raise ValueError(f"engine must be one of {', '.join(ENGINE_NAMES)}, but it is {requested!r}")
    if device.type != "cpu":
        if requested not in ("auto", "torch"):
            log.warning("engine %s runs on the CPU only; using torch on %s", requested, device)
        return "torch"
    wanted = AUTO_CPU.get(mode, "openvino") if requested == "auto" else requested
    if wanted.startswith("openvino") and not openvino_available():
        if requested != "auto":
            log.warning("engine %s: OpenVINO is not installed; using the torch reference", requested)
        return "torch"
    if wanted == "openvino-bf16" and not native_bf16():
        log.info("engine openvino-bf16: this CPU has no native bf16; using openvino (float32)")
        return "openvino"
    return wanted


def default_cache_dir() -> Path:
    """``$STROKE_SEG_ENGINE_CACHE`` or ``<system temp>/stroke-seg-engines``."""
    return Path(os.environ.get("STROKE_SEG_ENGINE_CACHE") or Path(tempfile.gettempdir()) / "stroke-seg-engines")


def _torch_engine(net: torch.nn.Module) -> Engine:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x).float()

    return run


def _module(net: torch.nn.Module | Callable[[], torch.nn.Module]) -> torch.nn.Module:
    return net if isinstance(net, torch.nn.Module) else net()


def _cache_path(cache_dir: Path, key: str) -> Path:
    import openvino as ov

    return cache_dir / f"{key}-ov{ov.__version__.split('-')[0]}.xml"


def openvino_cached(key: str, cache_dir: Path | None = None) -> bool:
    """True when the OpenVINO model converted under ``key`` is in the disk cache (no conversion needed)."""
    return openvino_available() and _cache_path(cache_dir or default_cache_dir(), key).is_file()


def _openvino_model(net: torch.nn.Module | Callable[[], torch.nn.Module], example: torch.Tensor, key: str,
                    cache_dir: Path):  # fmt: skip
    """The module as an OpenVINO model: read from the disk cache, else converted (seconds) and saved."""
    import openvino as ov

    core = ov.Core()
    path = _cache_path(cache_dir, key)
    if path.is_file():
        try:
            return core, core.read_model(str(path))
        except Exception as err:  # noqa: BLE001 - a damaged cache entry is rebuilt
            log.warning("engine cache %s unreadable (%s); converting again", path.name, err)
    model = ov.convert_model(_module(net), example_input=example)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}-{os.getpid()}.xml")
        ov.save_model(model, str(tmp), compress_to_fp16=False)  # the default would store weights in fp16
        tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
        tmp.replace(path)
    except OSError as err:
        log.warning("engine cache not written (%s); the conversion is redone in the next process", err)
    return core, model


def _openvino_engine(
    net: torch.nn.Module | Callable[[], torch.nn.Module],
    window: tuple[int, ...],
    key: str,
    precision: str,
    cache_dir: Path,
    channels: int | None,
    trace_window: tuple[int, ...] | None = None,
):
    if channels is None:
        channels = int(next(m for m in _module(net).modules() if isinstance(m, torch.nn.Conv3d)).in_channels)
    shape = (1, channels, *window)
    core, model = _openvino_model(net, torch.zeros(1, channels, *(trace_window or window)), key, cache_dir)
    model.reshape(list(shape))
    options = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if os.environ.get("STROKE_SEG_THREADS"):  # a share of the cores (one of several worker processes)
        options["INFERENCE_NUM_THREADS"] = int(os.environ["STROKE_SEG_THREADS"])
        options["ENABLE_CPU_PINNING"] = False  # pinned, every process would take the same first cores
    compiled = core.compile_model(model, "CPU", options)
    request = compiled.create_infer_request()
    request_lock = threading.Lock()  # one infer request per engine; jobs on other threads wait for it

    def run(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != shape:
            raise ValueError(f"engine input must have shape {shape}, but it has {tuple(x.shape)}")
        with request_lock:
            request.infer({0: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
            out = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        return torch.from_numpy(out)

    return run


def build_engine(
    name: str,
    net: torch.nn.Module | Callable[[], torch.nn.Module],
    *,
    window: tuple[int, int, int],
    key: str,
    cache_dir: Path | None = None,
    channels: int | None = None,
    trace_window: tuple[int, int, int] | None = None,
    keep: bool = True,
) -> tuple[str, Engine]:
    """The engine ``name`` for ``net`` on windows of ``window``, built once per process and ``key``.

    Args:
        name: a resolved engine (:func:`resolve_engine`), not ``"auto"``.
        net: the module in eval mode (on the device it will run on, for ``torch``), or a function returning it,
            called only when the module is needed (a conversion not in the disk cache, or the torch fallback).
        window: spatial window size; OpenVINO compiles for (1, C, *window).
        key: identifies the weights (their SHA-256); converted models are cached under it.
        cache_dir: where converted models are kept (default :func:`default_cache_dir`).
        channels: input channels; None reads them from the first ``Conv3d`` (a TorchScript module has none to read).
        trace_window: a smaller spatial size to convert on (a fully convolutional network; the converted model is
            then reshaped to ``window``); None converts on ``window``.
        keep: False builds a new OpenVINO engine that is not kept in the process (its memory, weights and
            activations of a window, goes with the caller's last reference); the disk cache is used either way.

    Returns:
        ``(name actually built, engine)``: ``"torch"`` when an OpenVINO engine failed to build (logged). The engine
        notes its name in :func:`record_engines` after each window it computes.
    """
    if name == "torch":
        return name, _recorded(name, _torch_engine(_module(net)))
    precision = {"openvino": "f32", "openvino-bf16": "bf16"}.get(name)
    if precision is None:
        raise ValueError(f"engine must be torch, openvino or openvino-bf16, but it is {name!r}")
    with _lock:
        cached = _compiled.get((key, name))
        if cached is None:
            cache = cache_dir or default_cache_dir()
            try:
                cached = _openvino_engine(net, window, key, precision, cache, channels, trace_window)
            except Exception as err:  # noqa: BLE001 - any engine failure falls back to the reference
                log.warning(
                    "engine %s failed to build (%s: %s); using the torch reference", name, type(err).__name__, err
                )
                return "torch", _recorded("torch", _torch_engine(_module(net)))
            if keep:
                _compiled[(key, name)] = cached
    return name, _recorded(name, cached)
