from __future__ import annotations

import csv
import json
import logging
import shutil

import numpy as np

from conftest import REPORT_KEYS, phantom, save
from stroke_seg.cli import main


def test_segment_writes_mask_and_json(phantom_files, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="stroke_seg.serving.memory")
    out, rep = tmp_path / "o" / "mask.nii.gz", tmp_path / "o" / "report.json"
    rc = main(
        [
            "segment",
            "--model",
            "adc-threshold",
            "--dwi",
            str(phantom_files["dwi"]),
            "--adc",
            str(phantom_files["adc"]),
            "--ground-truth",
            str(phantom_files["ground_truth"]),
            "--out",
            str(out),
            "--json",
            str(rep),
        ]
    )
    assert rc == 0 and out.is_file()
    report = json.loads(rep.read_text())
    assert set(REPORT_KEYS) <= set(report), set(REPORT_KEYS) - set(report)
    assert "Dice" in capsys.readouterr().out
    assert "allocator: freed memory kept between jobs" in caplog.text  # a segmenting command, as the app


def test_post_processing_options_reach_the_report(phantom_files, tmp_path):
    args = [
        "segment",
        "--dwi",
        str(phantom_files["dwi"]),
        "--adc",
        str(phantom_files["adc"]),
        "--out",
        str(tmp_path / "m.nii.gz"),
    ]
    assert main(args + ["--json", str(tmp_path / "a.json")]) == 0
    assert (
        main(
            args
            + [
                "--json",
                str(tmp_path / "b.json"),
                "--artefact-zone-adc",
                "0",
                "--max-lesion-adc",
                "900",
                "--edge-level",
                "0",
            ]
        )
        == 0
    )
    default, changed = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert (default["artefact_zone_adc"], default["max_lesion_adc"], default["edge_level"]) == (620.0, 1000.0, 0.5)
    assert (changed["artefact_zone_adc"], changed["max_lesion_adc"], changed["edge_level"]) == (None, 900.0, None)


def test_unknown_model_exit_2(phantom_files, tmp_path, capsys):
    rc = main(
        [
            "segment",
            "--dwi",
            str(phantom_files["dwi"]),
            "--adc",
            str(phantom_files["adc"]),
            "--out",
            str(tmp_path / "m.nii.gz"),
            "--model",
            "magic",
        ]
    )
    assert rc == 2 and "magic" in capsys.readouterr().err


def _simple_layout(root):
    for i in range(3):
        d = root / f"case{i}"
        d.mkdir(parents=True)
        dwi, adc, truth = phantom(seed=i)
        save(d / "dwi.nii.gz", dwi)
        save(d / "adc.nii.gz", adc)
        save(d / "mask.nii.gz", truth.astype(np.uint8))
    (root / "case1" / "adc.nii.gz").write_bytes(b"broken")  # one failing case


def test_batch_simple_layout_reports_failure_and_skips_done(tmp_path, capsys):
    _simple_layout(tmp_path / "in")
    rc = main(["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", "adc-threshold"])
    assert rc == 1  # one case failed, the others went through
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "out" / "summary.csv"))}
    assert rows["case0"]["status"] == "ok" and rows["case2"]["status"] == "ok"
    assert rows["case1"]["status"] == "failed" and "adc.nii.gz" in rows["case1"]["error"]
    assert float(rows["case0"]["dice"]) > 0.9
    assert (tmp_path / "out" / "case0" / "mask.nii.gz").is_file()
    # fix the broken case and run again: done cases are skipped, the fixed one runs
    shutil.copy(tmp_path / "in" / "case0" / "adc.nii.gz", tmp_path / "in" / "case1" / "adc.nii.gz")
    # a run that died while writing case1 left its staging folder; those of cases not in this run stay
    for left in (".staging-case1-dead", ".staging-elsewhere-x", ".staging-case1-b-x"):
        (tmp_path / "out" / left).mkdir()
        (tmp_path / "out" / left / "mask.nii.gz").write_bytes(b"")
    assert main(["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", "adc-threshold"]) == 0
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "out" / "summary.csv"))}
    assert rows["case0"]["status"] == "skipped (done)" and rows["case1"]["status"] == "ok"
    left = sorted(p.name for p in (tmp_path / "out").glob(".staging-*"))
    assert left == [".staging-case1-b-x", ".staging-elsewhere-x"]


def test_batch_isles22_bids_layout(tmp_path):
    root = tmp_path / "isles"
    dwi, adc, truth = phantom()
    for sub in ("sub-strokecase0001", "sub-strokecase0002"):
        d = root / sub / "ses-0001" / "dwi"
        d.mkdir(parents=True)
        save(d / f"{sub}_ses-0001_dwi.nii.gz", dwi)
        save(d / f"{sub}_ses-0001_adc.nii.gz", adc)
        g = root / "derivatives" / sub / "ses-0001"
        g.mkdir(parents=True)
        save(g / f"{sub}_ses-0001_msk.nii.gz", truth.astype(np.uint8))
    assert main(["batch", str(root), "--out", str(tmp_path / "out"), "--model", "adc-threshold"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))
    assert [r["case"] for r in rows] == ["sub-strokecase0001_ses-0001", "sub-strokecase0002_ses-0001"]
    assert all(float(r["dice"]) > 0.9 for r in rows)


def test_models_lists_backends(capsys):
    assert main(["models"]) == 0
    assert "adc-threshold" in capsys.readouterr().out


def test_models_shows_the_recorded_validation_figures(capsys):
    """unet and ensemble are listed with the figures bench/evaluate.py --record measured (validation.json)."""
    import json

    from stroke_seg.models import VALIDATION_PATH

    record = json.loads(VALIDATION_PATH.read_text())
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in ("unet", "ensemble"):
        i = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
        block = lines[i] + lines[i + 1]  # the model's line and its indented "validated on" line
        assert f"Dice {record['models'][name]['synthetic_dice']:.3f}" in block
        expert = record["real"]["isles22-strokecase0001"][name]
        assert f"real ISLES'22 case vs its expert mask: Dice {expert['dice']:.3f}" in block


def test_quality_warnings_reach_stderr_json_and_the_batch_csv(tmp_path, capsys):
    """The phantom's brain is ~90 mL: implausible for a head, so the brain-volume rule warns everywhere."""
    dwi, adc, _ = phantom()
    case = tmp_path / "in" / "tiny"
    case.mkdir(parents=True)
    save(case / "dwi.nii.gz", dwi)
    save(case / "adc.nii.gz", adc)
    assert (
        main(
            [
                "segment",
                "--dwi",
                str(case / "dwi.nii.gz"),
                "--adc",
                str(case / "adc.nii.gz"),
                "--out",
                str(tmp_path / "m.nii.gz"),
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    assert "warning: Brain mask volume" in capsys.readouterr().err
    assert any("Brain mask volume" in w for w in json.loads((tmp_path / "r.json").read_text())["warnings"])
    assert main(["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", "adc-threshold"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))
    assert "Brain mask volume" in rows[0]["warnings"]
