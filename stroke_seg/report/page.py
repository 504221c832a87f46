"""The one-page PDF of a :class:`~stroke_seg.report.describe.ClinicalReport` (reportlab; readable printed in grey).

Key axial slices through the lesions (radiological view: the patient's left on the image's right, an "R" on the
patient's right) with the lesion outlined in white inside black, so the outline stays visible in grey print; the
totals, the lesion table, the DWI-FLAIR statement, the registration check, the warnings, the settings, the atlas
citation and the research-use disclaimer.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from stroke_seg.pipeline.preprocess import to_canonical
from stroke_seg.report.describe import ClinicalReport
from stroke_seg.types import Case, voxel_sizes

__all__ = ["write_pdf", "key_slices", "slices_png", "MAX_TABLE_ROWS"]

MAX_TABLE_ROWS = 12
"""Lesions listed on the page (largest first); the rest are summed in one line (the JSON has them all)."""

_TILE_PX = 240


def key_slices(mask_c: np.ndarray, n: int = 4) -> list[int]:
    """Up to ``n`` canonical axial indices with the most lesion, at least 2 slices apart, inferior to superior; through
    the middle of the grid when the mask is empty."""
    area = mask_c.sum(axis=(0, 1))
    if not area.any():
        return [mask_c.shape[2] // 2]
    chosen: list[int] = []
    for k in np.argsort(-area, kind="stable"):
        if area[k] == 0 or len(chosen) == n:
            break
        if all(abs(int(k) - c) >= 2 for c in chosen):
            chosen.append(int(k))
    return sorted(chosen)


def _tile(dwi_c: np.ndarray, mask_c: np.ndarray, k: int, vs: tuple[float, float, float], window) -> Image.Image:
    """One axial slice, radiological, square-ish pixels, lesion outlined white inside black."""
    lo, hi = window
    sl = np.clip((dwi_c[:, :, k] - lo) / max(hi - lo, 1e-6), 0, 1)
    img = np.flipud(sl.T)[:, ::-1]  # rows anterior at top, patient's left on the right
    m = np.flipud(mask_c[:, :, k].T)[:, ::-1]
    scale = _TILE_PX / max(img.shape[0] * vs[1], img.shape[1] * vs[0])
    size = (max(1, round(img.shape[1] * vs[0] * scale)), max(1, round(img.shape[0] * vs[1] * scale)))
    grey = Image.fromarray((img * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    big = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    inner = big & ~ndi.binary_erosion(big, iterations=2)
    outer = ndi.binary_dilation(big, iterations=2) & ~big
    rgb = np.repeat(np.asarray(grey)[..., None], 3, axis=2).copy()
    rgb[outer] = 0
    rgb[inner] = 255
    tile = Image.fromarray(rgb)
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, 20, 14), fill=(0, 0, 0))
    draw.text((4, 2), "R", fill=(255, 255, 255))
    return tile


def slices_png(case: Case, mask: np.ndarray, n: int = 4, *, compress_level: int = 6) -> bytes:
    """PNG bytes: ``n`` key axial DWI slices in a row with the lesion outlined (see :func:`key_slices`);
    ``compress_level`` 0-9 as PIL's."""
    dwi_c, aff_c, _ = to_canonical(case.dwi, case.affine)
    mask_c = to_canonical(mask.astype(np.uint8), case.affine)[0] > 0
    vs = voxel_sizes(aff_c)
    sample = dwi_c[::2, ::2, ::2]
    vals = sample[sample > 0] if (sample > 0).any() else sample.ravel()
    window = tuple(float(v) for v in np.percentile(vals, [1, 99.5])) if vals.size else (0.0, 1.0)
    tiles = [_tile(dwi_c, mask_c, k, vs, window) for k in key_slices(mask_c, n)]
    height = max(t.height for t in tiles)
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height), (255, 255, 255))
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + 4
    buf = _io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _lesion_rows(report: ClinicalReport) -> list[list[str]]:
    rows = [["#", "Volume mL", "Core mL", "Side", "Territory", "Lobe / deep structure", "FLAIR ratio"]]
    for les in report.lesions[:MAX_TABLE_ROWS]:
        region = les.regions[0][0] if les.regions else "outside the atlas"
        territory = "-" if les.territory is None else f"{les.territory} {les.territories_ml[les.territory]:.1f} mL"
        rows.append(
            [
                str(les.label),
                _fmt(les.volume_ml, 2),
                _fmt(les.core_ml, 2),
                les.hemisphere,
                territory,
                region,
                _fmt(les.flair_ratio, 2),
            ]
        )
    rest = report.lesions[MAX_TABLE_ROWS:]
    if rest:
        vol, core = sum(r.volume_ml for r in rest), sum(r.core_ml for r in rest)
        rows.append(["", _fmt(vol, 2), _fmt(core, 2), "", f"{len(rest)} smaller lesions", "(all in the JSON)", ""])
    return rows


def _summary_lines(report: ClinicalReport) -> list[str]:
    s = report.settings
    terr = ", ".join(f"{k} {v:.1f}" for k, v in report.territories_ml.items() if v > 0) or "none"
    reg = report.registration
    dice = "not measured" if reg["brain_dice"] is None else f"brain-mask Dice {reg['brain_dice']:.2f}"
    return [
        f"<b>Lesion volume {report.lesion_volume_ml:.1f} mL</b> in {report.lesion_count} lesion(s); "
        f"<b>ischemic core {report.core_ml:.1f} mL</b> (ADC &lt; {s['core_adc']:g} x 10<super>-6</super> mm²/s); "
        f"brain {report.brain_volume_ml:.0f} mL.",
        f"Territories (mL): {terr}.",
        f"FLAIR: {report.mismatch_statement}",
        f"Placement in MNI152 space: {reg['method']}; {dice}.",
    ]


def _styles():
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

    base = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=base["BodyText"], fontSize=8.5, leading=10.5, spaceAfter=2)
    small = ParagraphStyle("small", parent=body, fontSize=7, leading=8.5)
    cell = ParagraphStyle("cell", parent=body, fontSize=7.5, leading=9, spaceAfter=0)
    return base["Title"], base["Heading4"], body, small, cell


def _table(report: ClinicalReport, cell):
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    rows = [[Paragraph(c, cell) for c in row] for row in _lesion_rows(report)]
    table = Table(rows, colWidths=[22, 50, 44, 36, 80, 220, 52], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.black),
                ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.85, 0.85, 0.85)),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return table


_RL_CONFIG_LOCK = threading.Lock()


@contextlib.contextmanager
def _binary_streams() -> Iterator[None]:
    """reportlab's streams stored binary (zlib only) instead of also ASCII85-encoded, for one build: its ASCII85 encoder
    is pure Python unless the optional C accelerator is installed (15 of the page's 69 ms on the ISLES'22 case), and
    the file is a fifth smaller. reportlab reads the choice from a module setting, so it is set
    around the build and put back, one build at a time."""
    from reportlab import rl_config

    with _RL_CONFIG_LOCK:
        before = rl_config.useA85
        rl_config.useA85 = 0
        try:
            yield
        finally:
            rl_config.useA85 = before


def write_pdf(report: ClinicalReport, case: Case, mask: np.ndarray, path: str | os.PathLike) -> Path:
    """Write the one-page PDF of ``report`` for ``case`` and its ``mask`` (bool, DWI grid) to ``path``."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import Image as PdfImage
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    path = Path(path)
    title, heading, body, small, cell = _styles()
    png = slices_png(case, np.asarray(mask) > 0, compress_level=0)  # reportlab decodes it and compresses the pixels
    picture = Image.open(_io.BytesIO(png))
    width = 180 * mm
    story = [
        Paragraph("Acute ischemic lesion report (research use only)", title),
        Paragraph(
            f"Images: {', '.join(f'{k} {v}' for k, v in report.sources.items()) or 'in memory'}. Mask: "
            f"{report.model or 'given by the user'} {report.model_version or ''}. stroke-seg {report.version}.",
            small,
        ),
        PdfImage(_io.BytesIO(png), width=width, height=width * picture.height / picture.width),
        Paragraph("Axial DWI, radiological view (R: patient's right); lesion outlined in white on black.", small),
        Spacer(1, 4),
        *[Paragraph(line, body) for line in _summary_lines(report)],
        Spacer(1, 4),
        _table(report, cell),
        Spacer(1, 4),
    ]
    if report.warnings:
        story.append(Paragraph("Warnings", heading))
        story += [Paragraph(f"- {w}", body) for w in report.warnings]
    s = report.settings
    story += [
        Paragraph(
            f"Rules: core = ADC &lt; {s['core_adc']:g} x 10<super>-6</super> mm²/s; side from MNI x beyond "
            f"{s['midline_mm']:g} mm of the midline (both: minor side &gt;= {s['both_share']:.0%}); territory from the "
            f"arterial atlas within {s['atlas_reach_mm']:g} mm; DWI-FLAIR mismatch when the FLAIR ratio is below "
            f"{s['flair_ratio']:g}. Atlas: {report.atlas}.",
            small,
        ),
        Paragraph(f"<b>{report.disclaimer}</b>", body),
    ]
    doc = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=10 * mm,
        bottomMargin=10 * mm,
        title="stroke-seg lesion report",
        author="stroke-seg",
        invariant=1,
    )
    with _binary_streams():
        doc.build(story)
    return path
