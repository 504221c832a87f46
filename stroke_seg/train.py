"""Train the ``unet`` backend on synthetic cases generated on the fly (CPU-friendly).

    python -m stroke_seg.train --out stroke_seg/models/weights/unet.pt --epochs 70 --seed 0

A pool of cases is generated at start (``stroke_seg.synth``, random acquisitions: 1-5 mm voxels,
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
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import synth
from .inference import sliding_window
from .io import load_case
from .metrics import dice
from .models.unet import WINDOW, UNet3D, prepare_inputs, resolve_device
from .preprocess import preprocess, to_canonical, zoom_to_spacing

log = logging.getLogger("stroke_seg.train")

PATTERN_WEIGHTS = {"territorial": 0.15, "lacunar": 0.15, "emboli": 0.3, "posterior": 0.15, "control": 0.08, "shine_through": 0.085, "old_infarct": 0.085}
VALIDATION_SEED = 900_000
PATCH = (48, 48, 48)


@dataclass
class Example:
    x: np.ndarray  # (3, x, y, z) float16, working grid, cropped
    y: np.ndarray  # (x, y, z) uint8
    pattern: str


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


def sample_patch(ex: Example, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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
    for ax in range(3):  # mirrors (the TTA of "accurate" mode flips the same axes)
        if rng.random() < 0.5:
            x, y = np.flip(x, ax + 1), np.flip(y, ax)
    x = x.copy()
    x[0] *= rng.uniform(0.85, 1.2)
    x[1] *= rng.uniform(0.93, 1.07)
    x[0] += rng.normal(0, rng.uniform(0, 0.05), x[0].shape).astype(np.float32) * (x[0] > 0)
    if rng.random() < 0.5:
        x[2] = 0  # FLAIR absent
    return x, y.copy()


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    soft_dice = 1 - (2 * inter + 1) / (p.sum() + target.sum() + 1)
    return bce + soft_dice


def validate(net: UNet3D, val: list[Example], device: torch.device) -> float:
    net.eval()
    scores = []
    for ex in val:
        x = torch.from_numpy(np.pad(ex.x.astype(np.float32), [(0, 0)] + [(0, max(0, w - s)) for s, w in zip(ex.x.shape[1:], WINDOW)])).to(device)
        prob = sliding_window(x, net, WINDOW)[: ex.y.shape[0], : ex.y.shape[1], : ex.y.shape[2]]
        if ex.y.any():
            scores.append(dice(prob > 0.5, ex.y > 0))
    net.train()
    return float(np.mean(scores)) if scores else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stroke_seg.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="weights file to write (.pt); a .json sidecar is written beside it")
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("stroke_seg.io").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = resolve_device(args.device)
    t0 = time.time()

    base_seed = 1_000_000 * (args.seed + 1)
    log.info("generating a pool of %d training cases (seeds %d+) and 8 validation cases (seeds %d+)", args.pool, base_seed, VALIDATION_SEED)
    pool = [make_example(base_seed + i) for i in range(args.pool)]
    next_seed = base_seed + args.pool
    val = [make_example(VALIDATION_SEED + i, synth.PATTERNS[i % len(synth.PATTERNS)]) for i in range(8)]
    log.info("pool ready in %.0f s", time.time() - t0)

    net = UNet3D(in_channels=3, base=args.base, depth=4).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    total = args.epochs * args.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / total) ** 0.9)
    history = []
    for epoch in range(args.epochs):
        losses = []
        for _ in range(args.steps_per_epoch):
            batch = [sample_patch(pool[rng.integers(len(pool))], rng) for _ in range(args.batch)]
            x = torch.from_numpy(np.stack([b[0] for b in batch])).to(device)
            y = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None].to(device)
            loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        for _ in range(2):  # refresh the pool with never-seen cases
            pool[rng.integers(len(pool))] = make_example(next_seed)
            next_seed += 1
        entry = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), "minutes": round((time.time() - t0) / 60, 1)}
        if (epoch + 1) % args.val_every == 0 or epoch + 1 == args.epochs:
            entry["val_dice"] = round(validate(net, val, device), 4)
        history.append(entry)
        log.info("epoch %s", entry)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save(state, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    meta = {
        "sha256": digest,
        "architecture": net.config,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "spacing_mm": 2.0,
        "channels": ["dwi/brain-median", "adc (1e-3 mm2/s)", "flair/brain-median or zeros"],
        "generator_version": synth.GENERATOR_VERSION,
        "command": "python -m stroke_seg.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "training_seeds": [base_seed, next_seed - 1],
        "validation_seeds": [VALIDATION_SEED, VALIDATION_SEED + 7],
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_minutes": round((time.time() - t0) / 60, 1),
        "history": history,
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    log.info("wrote %s (%d bytes, sha256 %s) after %.1f min", out, out.stat().st_size, digest[:12], meta["wall_minutes"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
