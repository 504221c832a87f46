"""``python -m stroke_seg.synthetic OUTDIR --n 20 --seed 0``: write generated cases with their ground truth."""

from __future__ import annotations

import sys

from stroke_seg.synthetic.generator import main

if __name__ == "__main__":
    sys.exit(main())
