"""Model backends behind one interface, and the registry that names them.

Backends are created on first use and kept (load once, predict many); creating one may load
weights, so nothing heavy happens at import time.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from stroke_seg.errors import ModelError
from stroke_seg.models.base import Backend
from stroke_seg.types import SegmentConfig

__all__ = [
    "Backend",
    "get_model",
    "check_model_name",
    "model_names",
    "model_infos",
    "register",
    "default_model",
    "unavailable_models",
    "model_class",
    "register_nnunet_folders",
    "weights_sha256",
]

_FACTORIES: dict[str, Callable[[], Backend]] = {}
_UNAVAILABLE: dict[str, str] = {}  # optional backends whose package is not installed: name -> how to add it
_INSTANCES: dict[str, Backend] = {}
_LOCK = threading.RLock()  # re-entrant: an ensemble creates its members inside get_model


def register(name: str, factory: Callable[[], Backend]) -> None:
    """Add a backend factory under ``name``."""
    _FACTORIES[name] = factory


def model_names() -> list[str]:
    """Registered backend names, in registration order."""
    return list(_FACTORIES)


def unavailable_models() -> dict[str, str]:
    """Optional backends not installed here, each with the line that says how to add it."""
    return dict(_UNAVAILABLE)


def check_model_name(name: str) -> None:
    """Raise :class:`~stroke_seg.errors.ModelError` unless ``name`` is a registered backend."""
    if name in _UNAVAILABLE:
        raise ModelError(f"model {name!r} is not installed here: {_UNAVAILABLE[name]}")
    if name not in _FACTORIES:
        raise ModelError(f"model: expected one of {', '.join(_FACTORIES)}, but got {name!r}")


def model_class(name: str) -> type[Backend] | None:
    """The backend class registered as ``name`` (its attributes, without creating it), or None for a factory."""
    check_model_name(name)
    factory = _FACTORIES[name]
    return factory if isinstance(factory, type) else getattr(factory, "backend_class", None)


def get_model(name: str) -> Backend:
    """The backend registered as ``name``, created once and reused.

    Raises:
        ModelError: unknown name, or the backend failed to load (missing/corrupt weights).
    """
    check_model_name(name)
    with _LOCK:
        if name not in _INSTANCES:
            _INSTANCES[name] = _FACTORIES[name]()
        return _INSTANCES[name]


VALIDATION_PATH = Path(__file__).with_name("validation.json")


def recorded_figures(name: str) -> str:
    """Measured figures for ``name`` from ``validation.json`` (written by ``bench/evaluate.py --record``), or ""."""
    try:
        record = json.loads(VALIDATION_PATH.read_text())
        f = record["models"][name]
    except (OSError, ValueError, KeyError):
        return ""
    text = (
        f"{f['synthetic_cases']} held-out synthetic cases (generator {record['generator_version']}, {record['mode']}): "
        f"Dice {f['synthetic_dice']:.3f}, lesion F1 {f['synthetic_lesion_f1']:.3f}, controls/mimics max "
        f"{f['negatives_max_ml']:.2f} mL"
    )
    real = record.get("real", {})
    expert = real.get("isles22-strokecase0001", {}).get(name)
    if expert and expert.get("dice") is not None:
        text += (
            f"; real ISLES'22 case vs its expert mask: Dice {expert['dice']:.3f}, lesion F1 {expert['lesion_f1']:.3f}"
        )
    raw = real.get("jhu-ads-subject01", {}).get(name)
    if raw and raw.get("dice") is not None:
        text += f"; raw clinical scan with skull (b0 + DWI, no ADC) vs DAGMNet: Dice {raw['dice']:.3f}"
    return text + "."


def model_infos() -> list[dict[str, str]]:
    """Name, description, validation (with recorded figures) and version of every backend, without loading weights."""
    out = []
    for name, factory in _FACTORIES.items():
        cls = factory if isinstance(factory, type) else getattr(factory, "backend_class", None)
        src = cls if cls is not None else get_model(name)
        figures = recorded_figures(name)
        out.append(
            {
                "name": name,
                "description": src.description,
                "validated_on": src.validated_on + (" " + figures if figures else ""),
                "version": src.version,
            }
        )
    return out


def default_model(wanted: str | None = None) -> str:
    """The model every door uses when none is named (library ``segment()``, CLI ``segment`` and ``batch``, the app,
    ``/segment`` and MCP): ``wanted`` when it is a registered model, else ``STROKE_SEG_DEFAULT_MODEL`` when that is
    one, else ``unet`` when its weights file is present, else ``adc-threshold``. The default mode is
    ``SegmentConfig().mode`` (``"fast"``) everywhere."""
    for name in (wanted, os.environ.get("STROKE_SEG_DEFAULT_MODEL")):
        if name in model_names():
            return name
    from stroke_seg.models.unet import WEIGHTS_PATH

    return "unet" if "unet" in model_names() and WEIGHTS_PATH.is_file() else "adc-threshold"


def _register_builtins() -> None:
    from stroke_seg.models import deepisles
    from stroke_seg.models.adc_threshold import AdcThreshold
    from stroke_seg.models.ensemble import Ensemble
    from stroke_seg.models.unet import UNetBackend

    register(AdcThreshold.name, AdcThreshold)
    register(UNetBackend.name, UNetBackend)
    register(Ensemble.name, Ensemble)
    if deepisles.available():
        register(deepisles.NAME, deepisles.DeepIslesNvauto)
    else:
        _UNAVAILABLE[deepisles.NAME] = deepisles.INSTALL_HINT
    register_nnunet_folders()


def register_nnunet_folders() -> list[str]:
    """Register ``nnunet`` (any folder, ``SegmentConfig.model_folder``) and one ``nnunet:<name>`` per trained-model
    folder under ``$STROKE_SEG_NNUNET_MODELS`` (read again on each call), where the nnU-Net extra is installed;
    returns the named models registered."""
    from . import nnunet

    if not nnunet.available():
        _UNAVAILABLE[nnunet.NAME] = nnunet.INSTALL_HINT
        return []
    register(nnunet.NAME, nnunet.NnUNetBackend)
    named = nnunet.folder_models()
    with _LOCK:
        for name in [n for n in _FACTORIES if n.startswith(nnunet.NAME + ":") and n not in named]:
            del _FACTORIES[name]
            _INSTANCES.pop(name, None)
        for name, folder in named.items():
            if getattr(_FACTORIES.get(name), "folder", None) != folder:
                register(name, nnunet.folder_backend(name, folder))
                _INSTANCES.pop(name, None)
    return list(named)


def weights_sha256(name: str, config: SegmentConfig) -> str:
    """The SHA-256 of the weights model ``name`` runs with ``config`` ("" for weights that ship with the code): part
    of the result cache key, so that other weights never serve a cached answer."""
    return get_model(name).weights_sha256(config) or ""


_register_builtins()
