"""Train the ``unet`` backend on synthetic cases generated on the fly (CPU-friendly).

    python -m stroke_seg.synthetic.train --out stroke_seg/models/weights/unet.pt --epochs 70 --seed 0

A pool of cases is generated at start (``stroke_seg.synthetic.generator``, random acquisitions: 1-5 mm voxels,
RAS/LPS, tilts, int16/float32, noise, bias, skull-stripped or not, every lesion pattern, controls
and mimics) and two cases of the pool are replaced by fresh ones every epoch. Each case goes
through the same preprocessing as inference (load_case -> preprocess -> 2 mm working grid).
Patches of 48³ are drawn (half centred on a lesion), with mirror, intensity-scale, noise and
FLAIR-dropout augmentation. Loss: BCE + soft Dice. A held-out seeded set (seeds never used in
training) is segmented with full sliding-window inference every few epochs and its Dice logged.
The file written is a ``state_dict`` (loaded with ``torch.load(weights_only=True)``) and a JSON
sidecar with the SHA-256, architecture, command, seed, wall time and validation figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from stroke_seg.io.case import load_case
from stroke_seg.io.digest import file_sha256
from stroke_seg.models.inference import sliding_window
from stroke_seg.models.unet import WINDOW, UNet3D, prepare_inputs, resolve_device
from stroke_seg.pipeline.metrics import dice
from stroke_seg.pipeline.preprocess import preprocess, to_canonical, zoom_to_spacing
from stroke_seg.synthetic import generator as synth

log = logging.getLogger("stroke_seg.synthetic.train")

PATTERN_WEIGHTS = {
    "territorial": 0.15,
    "lacunar": 0.15,
    "emboli": 0.3,
    "posterior": 0.15,
    "control": 0.08,
    "shine_through": 0.085,
    "old_infarct": 0.085,
}
VALIDATION_SEED = 900_000
PATCH = (48, 48, 48)


@dataclass
class Example:
    x: np.ndarray  # (3, x, y, z) float16, working grid, cropped
    y: np.ndarray  # (x, y, z) uint8
    pattern: str
    ignore: np.ndarray | None = None  # (x, y, z) bool: voxels left out of the loss (unknown lesion status)
    brain: np.ndarray | None = None  # (x, y, z) bool: where synthetic lesions may be inserted (real cases)


def make_example(seed: int, pattern: str | None = None) -> Example:
    rng = np.random.default_rng(seed)
    if pattern is None:
        names = list(PATTERN_WEIGHTS)
        pattern = str(rng.choice(names, p=np.array(list(PATTERN_WEIGHTS.values())) / sum(PATTERN_WEIGHTS.values())))
    acq = synth.random_acquisition(rng)
    if max(acq.voxel_size) < 1.2:  # 1 mm cases cost ~10 s to generate and end up at 2 mm anyway
        acq = dataclasses.replace(acq, voxel_size=(1.5, 1.5, 1.5))
    c = synth.make_case(seed, pattern, acq)
    case = load_case(c.dwi, c.adc, c.flair, c.mask)
    vols = preprocess(case)
    prep = prepare_inputs(vols, pad_to=PATCH)
    gt_c = to_canonical(case.ground_truth.astype(np.float32), case.affine)[0]
    y = zoom_to_spacing(gt_c, vols.voxel_size, 2.0)[prep.crop] > 0.5
    y = np.pad(y, [(0, p - s) for s, p in zip(y.shape, prep.x.shape[1:])])
    return Example(prep.x.astype(np.float16), y.astype(np.uint8), pattern)


@dataclass(frozen=True)
class RealScan:
    """How one real scan of ../shared/data is laid out: input files by role, reference lesion mask (or None), what
    that reference is, and the site's brain mask (or None)."""

    inputs: dict[str, str]
    reference: str | None
    reference_kind: str
    brain_mask: str | None = None


REAL_CASES = {
    "isles22-strokecase0001": RealScan({"dwi": "dwi.nii.gz", "adc": "adc.nii.gz"}, "expert_mask.nii.gz", "expert"),
    "jhu-ads-subject01": RealScan(
        {"dwi": "dwi.nii.gz", "b0": "b0.nii.gz"}, "dagmnet_mask.nii.gz", "DAGMNet (a model)", "brain_mask.nii.gz"
    ),
    "isles22-unlabelled-case": RealScan({"dwi": "dwi.nii.gz", "adc": "adc.nii.gz"}, None, "none"),
}
"""The real scans that ``--real`` (and ``bench/evaluate.py``) know. Their reference masks train as lesions; where
there is none, every DWI-bright, ADC-low region (grown by 6 mm) is left out of the loss."""


def make_real_example(folder: Path) -> Example:
    """A real scan on the working grid: its reference lesions as labels (or an ignore region when unlabelled)."""
    scan = REAL_CASES[folder.name]
    inputs, reference = scan.inputs, scan.reference
    case = load_case(
        folder / inputs["dwi"],
        (folder / inputs["adc"]) if "adc" in inputs else None,
        ground_truth=(folder / reference) if reference else None,
        b0=(folder / inputs["b0"]) if "b0" in inputs else None,
    )
    vols = preprocess(case)
    prep = prepare_inputs(vols, pad_to=PATCH)

    def working(canonical: np.ndarray) -> np.ndarray:
        out = zoom_to_spacing(canonical.astype(np.float32), vols.voxel_size, 2.0)[prep.crop]
        return np.pad(out, [(0, p - s) for s, p in zip(out.shape, prep.x.shape[1:])])

    brain = working(vols.brain) > 0.5
    if case.ground_truth is not None:
        y = working(to_canonical(case.ground_truth, case.affine)[0]) > 0.5
        ignore = None
    else:
        y = np.zeros(brain.shape, bool)
        suspect = brain & (prep.x[0] > 1.5) & (prep.x[1] < 0.65)
        ignore = ndi.binary_dilation(suspect, iterations=3) if suspect.any() else None
    log.info(
        "real case %s: %d lesion voxels, %s ignored",
        folder.name,
        int(y.sum()),
        0 if ignore is None else int(ignore.sum()),
    )
    return Example(prep.x.astype(np.float16), y.astype(np.uint8), "real", ignore, brain & ~y)


def insert_lesions(x: np.ndarray, y: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> None:
    """Insert 1-3 synthetic lesions into a real patch, in place: DWI brighter by 25-120 %, ADC lower by 10-55 %.

    Contrasts cover faint subacute emboli (DWI x1.25, ADC nearly normal) to acute cores (x2.2, ADC -55 %); edges
    are smooth (partial volume) and the label is where the lesion fraction is >= 0.5.
    """
    idx = np.argwhere(brain)
    if len(idx) == 0:
        return
    grid = np.indices(y.shape, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        c = idx[rng.integers(len(idx))]
        radii = rng.uniform(0.8, 7.0) * rng.uniform(0.7, 1.4, 3)
        d = np.sqrt(sum(((grid[i] - c[i]) / radii[i]) ** 2 for i in range(3)))
        frac = np.clip((1.3 - d) / 0.6, 0, 1) * brain
        if frac.max() < 0.5:
            continue
        x[0] *= 1 + rng.uniform(0.25, 1.2) * frac
        x[1] *= 1 - rng.uniform(0.1, 0.55) * frac
        y[frac >= 0.5] = 1


def add_artefact_band(x: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> None:
    """A susceptibility-like bright band at the brain edge, in place: DWI x1.4-3, ADC unchanged (not a lesion)."""
    edge = brain & ~ndi.binary_erosion(brain, iterations=2)
    idx = np.argwhere(edge)
    if len(idx) == 0:
        return
    c = idx[rng.integers(len(idx))]
    grid = np.indices(brain.shape, dtype=np.float32)
    sigma = rng.uniform(2.0, 5.0, 3)
    g = np.exp(-0.5 * sum(((grid[i] - c[i]) / sigma[i]) ** 2 for i in range(3))) * (x[0] > 0)
    x[0] *= 1 + rng.uniform(0.4, 2.0) * g


def sample_patch(ex: Example, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = np.asarray(ex.y.shape)
    if ex.y.any() and rng.random() < 0.5:
        fg = np.argwhere(ex.y)
        centre = fg[rng.integers(len(fg))] + rng.integers(-12, 13, 3)
    else:
        centre = rng.integers(0, shape)
    lo = np.clip(centre - np.asarray(PATCH) // 2, 0, shape - PATCH)
    sl = tuple(slice(int(a), int(a) + p) for a, p in zip(lo, PATCH))
    x = ex.x[(slice(None),) + sl].astype(np.float32)
    y = ex.y[sl].astype(np.float32)
    w = np.ones(y.shape, np.float32) if ex.ignore is None else (~ex.ignore[sl]).astype(np.float32)
    if ex.brain is not None:
        brain = ex.brain[sl] & (w > 0)
        if rng.random() < 0.7:
            insert_lesions(x, y, brain, rng)
        if rng.random() < 0.3:
            add_artefact_band(x, brain, rng)
    for ax in range(3):  # mirrors (the TTA of "accurate" mode flips the same axes)
        if rng.random() < 0.5:
            x, y, w = np.flip(x, ax + 1), np.flip(y, ax), np.flip(w, ax)
    x = x.copy()
    x[0] *= rng.uniform(0.85, 1.2)
    x[1] *= rng.uniform(0.93, 1.07)
    x[0] += rng.normal(0, rng.uniform(0, 0.05), x[0].shape).astype(np.float32) * (x[0] > 0)
    if rng.random() < 0.5:
        x[2] = 0  # FLAIR absent
    return x, y.copy(), w.copy()


def loss_fn(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE + soft Dice over the voxels whose ``weight`` is 1 (all when None)."""
    w = torch.ones_like(target) if weight is None else weight
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum() / w.sum().clamp_min(1)
    p = torch.sigmoid(logits) * w
    inter = (p * target).sum()
    soft_dice = 1 - (2 * inter + 1) / (p.sum() + (target * w).sum() + 1)
    return bce + soft_dice


def validate(net: UNet3D, val: list[Example], device: torch.device) -> float:
    net.eval()
    scores = []
    for ex in val:
        x = torch.from_numpy(
            np.pad(ex.x.astype(np.float32), [(0, 0)] + [(0, max(0, w - s)) for s, w in zip(ex.x.shape[1:], WINDOW)])
        ).to(device)
        prob = sliding_window(x, net, WINDOW)[: ex.y.shape[0], : ex.y.shape[1], : ex.y.shape[2]]
        if ex.y.any():
            scores.append(dice(prob > 0.5, ex.y > 0))
    net.train()
    return float(np.mean(scores)) if scores else float("nan")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stroke_seg.synthetic.train", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", required=True, help="weights file to write (.pt); a .json sidecar is written beside it"
    )
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=32, help="cases held in memory")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--base", type=int, default=16, help="channels of the first U-Net level")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--val-every", type=int, default=5, help="epochs between validations")
    parser.add_argument("--init", default=None, help="start from these weights (fine-tuning) instead of random ones")
    parser.add_argument(
        "--real-root", default=None, help="folder holding the real scans of --real (e.g. ../shared/data)"
    )
    parser.add_argument(
        "--real", nargs="*", default=[], choices=sorted(REAL_CASES), help="real scans to train on (background, lesions)"
    )
    parser.add_argument("--real-fraction", type=float, default=0.5, help="share of patches drawn from the real scans")
    return parser


def _train_epoch(net, opt, sched, pool, real, rng: np.random.Generator, args, device) -> list[float]:
    """One epoch of ``args.steps_per_epoch`` optimiser steps on patches drawn from the pool and the real scans."""
    losses = []
    for _ in range(args.steps_per_epoch):
        batch = [
            sample_patch(
                real[rng.integers(len(real))]
                if real and rng.random() < args.real_fraction
                else pool[rng.integers(len(pool))],
                rng,
            )
            for _ in range(args.batch)
        ]
        x = torch.from_numpy(np.stack([b[0] for b in batch])).to(device)
        y = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None].to(device)
        w = torch.from_numpy(np.stack([b[2] for b in batch]))[:, None].to(device)
        loss = loss_fn(net(x), y, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


def _save(net, out: Path, meta: dict) -> None:
    """Write the weights and their .json sidecar (``meta`` plus the checksum, architecture and size)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save(state, out)
    digest = file_sha256(out)
    meta = {
        "sha256": digest,
        "architecture": net.config,
        "parameters": int(sum(p.numel() for p in net.parameters())),
    } | meta
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    log.info(
        "wrote %s (%d bytes, sha256 %s) after %.1f min", out, out.stat().st_size, digest[:12], meta["wall_minutes"]
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("stroke_seg.io.case").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = resolve_device(args.device)
    t0 = time.time()

    base_seed = 1_000_000 * (args.seed + 1)
    log.info(
        "generating a pool of %d training cases (seeds %d+) and 8 validation cases (seeds %d+)",
        args.pool,
        base_seed,
        VALIDATION_SEED,
    )
    pool = [make_example(base_seed + i) for i in range(args.pool)]
    next_seed = base_seed + args.pool
    val = [make_example(VALIDATION_SEED + i, synth.PATTERNS[i % len(synth.PATTERNS)]) for i in range(8)]
    log.info("pool ready in %.0f s", time.time() - t0)

    real = [make_real_example(Path(args.real_root) / name) for name in args.real]
    net = UNet3D(in_channels=3, base=args.base, depth=4)
    if args.init:
        net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
        log.info("fine-tuning from %s", args.init)
    net = net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    total = args.epochs * args.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / total) ** 0.9)
    history = []
    for epoch in range(args.epochs):
        losses = _train_epoch(net, opt, sched, pool, real, rng, args, device)
        for _ in range(2):  # refresh the pool with never-seen cases
            pool[rng.integers(len(pool))] = make_example(next_seed)
            next_seed += 1
        entry = {
            "epoch": epoch + 1,
            "loss": round(float(np.mean(losses)), 4),
            "minutes": round((time.time() - t0) / 60, 1),
        }
        if (epoch + 1) % args.val_every == 0 or epoch + 1 == args.epochs:
            entry["val_dice"] = round(validate(net, val, device), 4)
        history.append(entry)
        log.info("epoch %s", entry)
    _save(
        net,
        Path(args.out),
        {
            "spacing_mm": 2.0,
            "channels": ["dwi/brain-median", "adc (1e-3 mm2/s)", "flair/brain-median or zeros"],
            "generator_version": synth.GENERATOR_VERSION,
            "command": "python -m stroke_seg.synthetic.train " + " ".join(sys.argv[1:] if argv is None else argv),
            "seed": args.seed,
            "training_seeds": [base_seed, next_seed - 1],
            "real_cases": list(args.real),
            "init": Path(args.init).name if args.init else None,
            "validation_seeds": [VALIDATION_SEED, VALIDATION_SEED + 7],
            "device": str(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "wall_minutes": round((time.time() - t0) / 60, 1),
            "history": history,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
