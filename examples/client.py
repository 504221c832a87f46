"""Submit a bundled example to a running stroke-seg app with gradio_client, stream its progress,
save the mask.

    python app.py &                                   # or a HuggingFace Space URL
    python examples/client.py http://127.0.0.1:7860/ --case examples/embolic_multi --model unet --out mask.nii.gz
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from gradio_client import Client, handle_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", nargs="?", default="http://127.0.0.1:7860/")
    p.add_argument(
        "--case",
        default=str(Path(__file__).parent / "embolic_multi"),
        help="folder with dwi.nii.gz, adc.nii.gz (+ flair, mask)",
    )
    p.add_argument("--model", default="unet")
    p.add_argument("--mode", default="fast", choices=("fast", "accurate"))
    p.add_argument("--out", default="mask.nii.gz")
    a = p.parse_args()
    case = Path(a.case)

    def optional(name: str):
        return handle_file(str(case / name)) if (case / name).is_file() else None

    client = Client(a.url, verbose=False)
    job = client.submit(
        handle_file(str(case / "dwi.nii.gz")),
        handle_file(str(case / "adc.nii.gz")),
        optional("flair.nii.gz"),
        optional("mask.nii.gz"),
        a.model,
        a.mode,
        api_name="/segment",
    )
    t0, last = time.monotonic(), None
    while not job.done():
        status = job.status()
        line = f"{status.code.value}"
        if status.rank is not None and status.code.value == "IN_QUEUE":
            line += f" (position {status.rank + 1} of {status.queue_size})"
        if status.progress_data:
            unit = status.progress_data[-1]
            line = f"{unit.progress:.0%} {unit.desc}" if unit.progress is not None else f"{unit.desc}"
        if line != last:
            print(f"[{time.monotonic() - t0:5.1f} s] {line}", flush=True)
            last = line
        time.sleep(0.1)
    mask_path, report, montage_path, brain_path = job.result()
    shutil.copy(mask_path, a.out)
    summary = {k: report[k] for k in ("model", "lesion_volume_ml", "lesion_count", "dice", "lesion_f1") if k in report}
    print(json.dumps(summary, indent=2))
    print(f"mask saved to {a.out}; montage at {montage_path}; brain mask the model used at {brain_path}")


if __name__ == "__main__":
    main()
