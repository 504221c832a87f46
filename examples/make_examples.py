"""Regenerate the bundled example cases exactly: ``python examples/make_examples.py``.

Each case is ``stroke_seg.synthetic.generator.make_case(seed, pattern, acquisition)`` with the values below,
written by ``SynthCase.save`` (dwi, adc, mask = ground truth, optional flair, meta.json).
"""

from __future__ import annotations

from pathlib import Path

from stroke_seg.synthetic.generator import Acquisition, make_case

HERE = Path(__file__).parent

EXAMPLES = {
    "territorial_mca": (
        101,
        "territorial",
        Acquisition(
            voxel_size=(2.0, 2.0, 2.0), orientation="RAS", dtype="int16", skull_stripped=True, noise=0.03, bias=0.2
        ),
    ),
    "embolic_multi": (
        202,
        "emboli",
        Acquisition(
            voxel_size=(2.0, 2.0, 2.0),
            orientation="LPS",
            dtype="int16",
            skull_stripped=True,
            noise=0.03,
            bias=0.1,
            adc_unit="1e-6",
            with_flair=True,
        ),
    ),
    "lacunar": (
        303,
        "lacunar",
        Acquisition(
            voxel_size=(2.0, 2.0, 2.0),
            orientation="RAS",
            tilt_deg=(6.0, 0.0, -4.0),
            oblique=True,
            dtype="int16",
            skull_stripped=True,
            noise=0.025,
        ),
    ),
    "mimic_shine_through": (
        404,
        "shine_through",
        Acquisition(voxel_size=(2.0, 2.0, 2.0), orientation="LPS", dtype="int16", skull_stripped=True, noise=0.03),
    ),
}

if __name__ == "__main__":
    for name, (seed, pattern, acq) in EXAMPLES.items():
        case = make_case(seed, pattern, acq)
        case.save(HERE / name)
        print(f"{name}: {pattern}, {case.lesion_volume_ml:.2f} mL")
