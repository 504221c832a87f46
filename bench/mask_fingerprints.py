"""Fingerprints (SHA-256 of the mask voxels, volume) of every model and mode on the examples and the shared real scans.

    python bench/mask_fingerprints.py --out fingerprints.json [--compare before.json] [--real-root ../shared/data]

Run before and after a change that must not change behaviour; ``--compare`` prints every difference and exits 1
when there is one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fingerprints(real_root: Path, models: list[str], modes: list[str]) -> dict[str, dict]:
    import numpy as np

    import stroke_seg
    from stroke_seg.serving.batch import discover_cases
    from stroke_seg.synthetic.train import REAL_CASES

    cases = [(f"example/{n}", f) for n, f in discover_cases(ROOT / "examples")]
    for folder_name, scan in REAL_CASES.items():
        folder = real_root / folder_name
        if folder.is_dir():
            cases.append((f"real/{folder_name}", {role: folder / f for role, f in scan.inputs.items()}))
    out = {}
    for name, files in cases:
        for model in models:
            for mode in modes:
                result = stroke_seg.segment(files, model=model, config=stroke_seg.SegmentConfig(mode=mode))
                mask = np.ascontiguousarray(np.asarray(result.mask.dataobj, dtype=np.uint8))
                out[f"{name} {model} {mode}"] = {
                    "sha256": hashlib.sha256(mask.tobytes()).hexdigest(),
                    "voxels": int(mask.sum()),
                }
                logging.info("%s %s %s: %d voxels", name, model, mode, int(mask.sum()))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--real-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--models", nargs="+", default=["adc-threshold", "unet"])
    parser.add_argument("--modes", nargs="+", default=["fast", "accurate"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    found = fingerprints(args.real_root, args.models, args.modes)
    args.out.write_text(json.dumps(found, indent=1) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())
        diffs = [k for k in sorted(set(before) | set(found)) if before.get(k) != found.get(k)]
        for k in diffs:
            logging.info("DIFFERENT %s: %s -> %s", k, before.get(k), found.get(k))
        logging.info("%d of %d masks identical", len(found) - len(diffs), len(found))
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
