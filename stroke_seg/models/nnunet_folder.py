"""A nnU-Net v2 trained-model folder, checked and read: its channels, folds, checksum, and the network it holds.

A trained-model folder is what ``nnUNetv2_train`` leaves in
``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``: ``dataset.json`` (``channel_names``, ``labels``,
``file_ending``), ``plans.json`` and ``fold_<k>/checkpoint_final.pth`` for each trained fold. Nothing here imports
``nnunetv2`` at module level (the extra is optional); :func:`load_network` does.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import pkgutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stroke_seg.errors import ModelError

__all__ = ["CHECKPOINT", "CHANNEL_ROLES", "NnUNetFolder", "inspect_folder", "is_model_folder", "load_network"]

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint_final.pth"
CHANNEL_ROLES = {
    "dwi": "dwi", "b1000": "dwi", "b=1000": "dwi", "dwi_b1000": "dwi", "trace": "dwi", "tracew": "dwi",
    "adc": "adc", "flair": "flair",
}  # fmt: skip
"""``dataset.json`` channel names (case-insensitive) -> the case's volume: DWI (b=1000), ADC or FLAIR."""
ROLE_NAMES = {"dwi": "DWI (b=1000)", "adc": "ADC", "flair": "FLAIR"}


def is_model_folder(path: Path) -> bool:
    """True when ``path`` holds ``dataset.json``, ``plans.json`` and at least one ``fold_*/checkpoint_final.pth``."""
    return (
        (path / "dataset.json").is_file() and (path / "plans.json").is_file() and any(path.glob(f"fold_*/{CHECKPOINT}"))
    )


@dataclass(frozen=True, eq=False)
class NnUNetFolder:
    """A checked trained-model folder.

    Attributes:
        path: the folder (resolved).
        dataset, plans: its ``dataset.json`` and ``plans.json``.
        folds: the folds present, nnU-Net's way: every ``fold_<k>`` with a final checkpoint, ``all`` only when
            there is no numbered one.
        roles: the case volume each input channel takes, in channel order (``"dwi"``, ``"adc"``, ``"flair"``).
        sha256: one SHA-256 over ``dataset.json``, ``plans.json`` and each fold's checkpoint (name + content).
    """

    path: Path
    dataset: dict[str, Any]
    plans: dict[str, Any]
    folds: tuple[str, ...]
    roles: tuple[str, ...]
    sha256: str
    channel_names: tuple[str, ...] = field(default=())

    def files(self) -> list[Path]:
        return [self.path / "dataset.json", self.path / "plans.json"] + [self.checkpoint(f) for f in self.folds]

    def checkpoint(self, fold: str) -> Path:
        return self.path / f"fold_{fold}" / CHECKPOINT

    def details(self) -> dict[str, Any]:
        return {
            "weights_sha256": self.sha256,
            "model_folder": self.path.name,
            "folds": list(self.folds),
            "channels": ", ".join(f"{n} -> {ROLE_NAMES[r]}" for n, r in zip(self.channel_names, self.roles)),
        }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"nnU-Net folder: {path.name} in {path.parent} could not be read as JSON ({err})") from err
    if not isinstance(data, dict):
        raise ModelError(f"nnU-Net folder: {path} should hold a JSON object, but it holds {type(data).__name__}")
    return data


def _folds(path: Path) -> tuple[str, ...]:
    numbered = sorted(
        (int(p.parent.name[5:]) for p in path.glob(f"fold_*/{CHECKPOINT}") if p.parent.name[5:].isdigit()),
    )
    if numbered:
        return tuple(str(k) for k in numbered)
    if (path / "fold_all" / CHECKPOINT).is_file():
        return ("all",)
    raise ModelError(
        f"nnU-Net folder {path}: expected fold_<k>/{CHECKPOINT} for at least one fold (what nnUNetv2_train writes "
        "at the end of training), but there is none"
    )


def _roles(path: Path, dataset: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(names, dict) or not names:
        raise ModelError(f"nnU-Net folder {path}: dataset.json has no channel_names (e.g. {{'0': 'DWI', '1': 'ADC'}})")
    ordered = [str(names[k]) for k in sorted(names, key=lambda k: int(k))]
    roles = []
    for i, name in enumerate(ordered):
        role = CHANNEL_ROLES.get(name.strip().casefold().replace(" ", "_"))
        if role is None:
            raise ModelError(
                f"nnU-Net folder {path}: input channel {i} is {name!r}, which this project cannot provide; it maps "
                f"dataset.json channel names {', '.join(sorted(CHANNEL_ROLES))} (any case) to the case's DWI, ADC "
                "and FLAIR"
            )
        roles.append(role)
    return tuple(ordered), tuple(roles)


def _digest(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in files:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        digest.update(f"{p.relative_to(root).as_posix()}:{h.hexdigest()}\n".encode())
    return digest.hexdigest()


_CHECKED: dict[Path, tuple[tuple, NnUNetFolder]] = {}
_CHECKED_LOCK = threading.Lock()


def _signature(files: list[Path]) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def inspect_folder(folder: str | Path) -> NnUNetFolder:
    """The checked folder; its checksum is computed once and again only when a file's size or time changes.

    Raises:
        ModelError: not a folder, ``dataset.json`` / ``plans.json`` missing or unreadable, no fold checkpoint, or a
            channel this project cannot map (each named).
    """
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise ModelError(
            f"nnU-Net folder: expected a trained-model folder (dataset.json, plans.json, fold_<k>/{CHECKPOINT}), "
            f"but {path} is not a folder"
        )
    for name in ("dataset.json", "plans.json"):
        if not (path / name).is_file():
            raise ModelError(
                f"nnU-Net folder {path}: {name} is missing (a trained-model folder holds dataset.json, plans.json "
                f"and fold_<k>/{CHECKPOINT})"
            )
    dataset, plans = _read_json(path / "dataset.json"), _read_json(path / "plans.json")
    folds = _folds(path)
    names, roles = _roles(path, dataset)
    files = [path / "dataset.json", path / "plans.json"] + [path / f"fold_{f}" / CHECKPOINT for f in folds]
    signature = _signature(files)
    with _CHECKED_LOCK:
        known = _CHECKED.get(path)
        if known is not None and known[0] == signature:
            return known[1]
    checked = NnUNetFolder(path, dataset, plans, folds, roles, _digest(path, files), names)
    with _CHECKED_LOCK:
        _CHECKED[path] = (signature, checked)
    return checked


# -- the network --------------------------------------------------------------------------------------------------
def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A fold checkpoint, loaded with ``weights_only=True``: tensors, plain containers, and the numpy scalars and
    ``torch.device`` nnU-Net's trainer stores beside the weights; nothing else is unpickled."""
    allowed = [np.dtype, np.float64, np.float32, np.int64, type(np.dtype(np.float64)), type(np.dtype(np.float32))]
    allowed.append((np._core.multiarray.scalar, "numpy.core.multiarray.scalar"))  # numpy 1.x pickles
    allowed.append(np._core.multiarray.scalar)
    try:
        with torch.serialization.safe_globals(allowed):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - UnpicklingError, zip errors, truncated files
        raise ModelError(
            f"nnU-Net folder: {path.parent.name}/{path.name} could not be loaded with weights_only=True "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); the file is damaged, or it "
            "holds objects other than weights that this project does not unpickle"
        ) from err
    missing = [k for k in ("network_weights", "trainer_name", "init_args") if k not in ckpt]
    if missing:
        raise ModelError(
            f"nnU-Net folder: {path.parent.name}/{path.name} is not a nnU-Net checkpoint (no {missing[0]})"
        )
    return ckpt


def _trainer_class(name: str):
    """The trainer class ``name``, as nnU-Net finds it; where nnU-Net's search stops at a trainer module whose
    dependency is not installed here (timm for the Primus trainers), the modules that do import are searched."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        found = recursive_find_trainer_class_by_name(name)
    except ImportError as err:
        log.info("nnU-Net's trainer search hit %s; searching the importable trainer modules", err)
        found = None
        import nnunetv2.training.nnUNetTrainer as root

        for info in pkgutil.walk_packages(root.__path__, root.__name__ + ".", onerror=lambda _name: None):
            try:
                module = importlib.import_module(info.name)
            except ImportError:
                continue
            if hasattr(module, name):
                found = getattr(module, name)
                break
        if found is None:
            raise ModelError(
                f"nnU-Net trainer {name!r} is not available here ({err}); the nnU-Net extra leaves out timm and "
                "torchvision, which only the Primus / ViT trainers need"
            ) from err
    except RuntimeError as err:  # nnU-Net raises RuntimeError when no trainer of that name exists
        raise ModelError(f"nnU-Net trainer {name!r} of this folder is unknown to nnunetv2 ({err})") from err
    if found is None:
        raise ModelError(f"nnU-Net trainer {name!r} of this folder is unknown to the installed nnunetv2")
    return found


def load_network(folder: NnUNetFolder) -> dict[str, Any]:
    """Everything ``nnUNetPredictor.manual_initialization`` takes, read from ``folder`` the way
    ``initialize_from_trained_model_folder`` reads it (same plans, configuration, trainer and network), except that
    checkpoints are loaded with ``weights_only=True``."""
    import inspect

    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(folder.plans)
    checkpoints = [_load_checkpoint(folder.checkpoint(f)) for f in folder.folds]
    first = checkpoints[0]
    configuration = first["init_args"]["configuration"]
    if configuration not in folder.plans.get("configurations", {}):
        raise ModelError(f"nnU-Net folder {folder.path}: configuration {configuration!r} is not in plans.json")
    configuration_manager = plans_manager.get_configuration(configuration)
    trainer = _trainer_class(first["trainer_name"])
    n_in = determine_num_input_channels(plans_manager, configuration_manager, folder.dataset)
    n_out = plans_manager.get_label_manager(folder.dataset).num_segmentation_heads
    if "plans_manager" in inspect.signature(trainer.build_network_architecture).parameters:
        network = trainer.build_network_architecture(
            plans_manager, configuration_manager, n_in, n_out, enable_deep_supervision=False
        )
    else:  # the old signature, as nnU-Net still accepts it
        network = trainer.build_network_architecture(
            configuration_manager.network_arch_class_name, configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import, n_in, n_out, enable_deep_supervision=False,
        )  # fmt: skip
    parameters = [c["network_weights"] for c in checkpoints]
    network.load_state_dict(parameters[0])
    return {
        "network": network,
        "plans_manager": plans_manager,
        "configuration_manager": configuration_manager,
        "parameters": parameters,
        "dataset_json": folder.dataset,
        "trainer_name": first["trainer_name"],
        "configuration": configuration,
        "inference_allowed_mirroring_axes": first.get("inference_allowed_mirroring_axes"),
    }
