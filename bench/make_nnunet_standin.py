"""A small, real nnU-Net v2 trained-model folder with random weights: a stand-in for tests and benchmarks.

    python bench/make_nnunet_standin.py OUT [--folds 1] [--seed 0]

OUT becomes what ``nnUNetv2_train`` leaves in ``nnUNet_results/<dataset>/nnUNetTrainer__nnUNetPlans__3d_fullres``
(name OUT that way to keep nnU-Net's conventions; the backend does not need it):

* ``dataset.json``: ``channel_names`` {"0": "DWI", "1": "ADC"}, labels background 0 / lesion 1, ``.nii.gz`` files;
* ``plans.json``: plans ``nnUNetPlans`` with one configuration, ``3d_fullres``: 2 mm isotropic target spacing (the
  shared ISLES'22 case's grid, so that it is not resampled), z-score per channel inside the non-zero mask,
  ``SimpleITKIO``, patch 64 x 64 x 64, and a ``PlainConvUNet`` of 4 stages (8, 16, 32, 64 features, 3x3x3 kernels,
  instance norm, leaky ReLU) from ``dynamic_network_architectures``, 0.35 M parameters;
* ``fold_<k>/checkpoint_final.pth`` for k < --folds: the keys nnU-Net's trainer saves (``network_weights``,
  ``init_args`` with plans, configuration, fold and dataset.json, ``trainer_name`` "nnUNetTrainer",
  ``inference_allowed_mirroring_axes`` (0, 1, 2), ``current_epoch``, ``_best_ema`` and ``logging`` holding numpy
  floats as a trained checkpoint does).

The weights: nnU-Net's own initialisation of the network (He, ``network.initialize``) after
``torch.manual_seed(seed + fold)``, then the final 1x1x1 layer's biases set to (0, ``LESION_BIAS``). Random weights
give a lesion-minus-background logit spread widely over the head (about -25 ... 25 on the shared case), so with a
zero bias about a third of the non-zero box is labelled; ``LESION_BIAS`` = -2.9 was chosen as the 98th percentile of
that logit inside the non-zero voxels of ../shared/data/isles22-strokecase0001 (seed 0, one fold, no mirroring), so
that the folder labels about 2 % of them there: 4,169 voxels (a non-empty, non-full mask). Building the folder is
deterministic (same seed, same weights); the mask means nothing clinically: the folder exists to test that this
project runs a nnU-Net folder exactly as nnU-Net does, and to time it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

LESION_BIAS = -2.9
DATASET_NAME = "Dataset901_StrokeSegStandin"
CONFIGURATION = "3d_fullres"
PATCH = [64, 64, 64]
FEATURES = [8, 16, 32, 64]
SPACING = [2.0, 2.0, 2.0]

ARCHITECTURE = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": len(FEATURES),
        "features_per_stage": FEATURES,
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * len(FEATURES),
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (len(FEATURES) - 1),
        "n_conv_per_stage": [2] * len(FEATURES),
        "n_conv_per_stage_decoder": [2] * (len(FEATURES) - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def dataset_json() -> dict:
    return {
        "channel_names": {"0": "DWI", "1": "ADC"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": 0,
        "file_ending": ".nii.gz",
        "name": DATASET_NAME,
        "description": "stroke-seg stand-in: random weights, not a trained model",
    }


def _intensity(mean: float, sd: float) -> dict:
    return {
        "max": mean + 5 * sd, "mean": mean, "median": mean, "min": 0.0, "percentile_00_5": mean - 2.5 * sd,
        "percentile_99_5": mean + 2.5 * sd, "std": sd,
    }  # fmt: skip


def plans_json() -> dict:
    resample = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": DATASET_NAME,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": SPACING,
        "original_median_shape_after_transp": [73, 112, 112],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            CONFIGURATION: {
                "data_identifier": f"nnUNetPlans_{CONFIGURATION}",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": PATCH,
                "median_image_size_in_voxels": [73, 112, 112],
                "spacing": SPACING,
                "normalization_schemes": ["ZScoreNormalization", "ZScoreNormalization"],
                "use_mask_for_norm": [True, True],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resample,
                "resampling_fn_seg_kwargs": resample | {"is_seg": True, "order": 1},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": resample | {"order": 1},
                "architecture": ARCHITECTURE,
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": _intensity(300.0, 80.0), "1": _intensity(0.8, 0.2)},
    }


def build_network(seed: int) -> torch.nn.Module:
    """The configuration's network as nnU-Net builds it for training, initialised as nnU-Net does."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    torch.manual_seed(seed)
    net = get_network_from_plans(
        ARCHITECTURE["network_class_name"], ARCHITECTURE["arch_kwargs"], ARCHITECTURE["_kw_requires_import"],
        input_channels=2, output_channels=2, allow_init=True, deep_supervision=True,
    )  # fmt: skip
    with torch.no_grad():
        final = net.decoder.seg_layers[-1]
        final.bias.copy_(torch.tensor([0.0, LESION_BIAS]))
    return net


def checkpoint(fold: int, seed: int, plans: dict, dataset: dict) -> dict:
    """What ``nnUNetTrainer.save_checkpoint`` writes, with this fold's random weights."""
    net = build_network(seed + fold)
    return {
        "network_weights": net.state_dict(),
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {"ema_fg_dice": [np.float64(0.0)], "mean_fg_dice": [np.float64(0.0)], "train_losses": [0.0]},
        "_best_ema": np.float64(0.0),
        "current_epoch": 1,
        "init_args": {
            "plans": plans,
            "configuration": CONFIGURATION,
            "fold": fold,
            "dataset_json": dataset,
            "device": torch.device("cpu"),
        },  # fmt: skip
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }


def make_standin(out: Path, *, folds: int = 1, seed: int = 0) -> Path:
    """Write the stand-in folder at ``out`` (created; files in it replaced) and return ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    plans, dataset = plans_json(), dataset_json()
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2))
    (out / "plans.json").write_text(json.dumps(plans, indent=2))
    for fold in range(folds):
        (out / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(checkpoint(fold, seed, plans, dataset), out / f"fold_{fold}" / "checkpoint_final.pth")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the trained-model folder to write")
    parser.add_argument("--folds", type=int, default=1, help="folds to write (fold_0 ... fold_N-1); default 1")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of fold 0 (fold k: seed + k); default 0")
    args = parser.parse_args(argv)
    if args.folds < 1:
        parser.error(f"--folds must be >= 1, but it is {args.folds}")
    print(make_standin(args.out, folds=args.folds, seed=args.seed))


if __name__ == "__main__":
    main()
