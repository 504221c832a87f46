"""The NiiVue viewer widget: a ``gr.HTML`` subclass whose HTML, CSS and JS live in files beside it.

NiiVue itself (npm ``@niivue/niivue``, installed by ``npm ci``) is served by the app from ``node_modules``; no CDN.
The value is a JSON string ``{"dwi": url, "adc": url, "mask": url, "brain": url or null, "key": entry}`` with
page-relative URLs, so the
volumes load behind a reverse proxy and HTTPS termination alike. ``window.strokeSegViewer`` exposes the NiiVue
instance and a load counter to tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

__all__ = ["NiiVueViewer", "NIIVUE_JS", "viewer_value"]

HERE = Path(__file__).resolve().parent
NIIVUE_JS = HERE.parent / "node_modules" / "@niivue" / "niivue" / "dist" / "niivue.umd.js"


def file_url(path: Path) -> str:
    """Page-relative URL of a file Gradio serves (survives a reverse proxy and HTTPS termination)."""
    return f"gradio_api/file={path}"


def viewer_value(dwi: Path, adc: Path, mask: Path, key: str, *, brain: Path | str | None = None) -> str:
    """The viewer's value for one result; ``brain``: the brain mask the model used (its overlay toggle)."""
    value = {"dwi": file_url(dwi), "adc": file_url(adc), "mask": file_url(mask), "key": key}
    return json.dumps(value | {"brain": file_url(Path(brain)) if brain else None})


class NiiVueViewer(gr.HTML):
    """DWI or ADC with the lesion mask in red, opened on a lesion voxel (light-blue crosshair); opacity slider;
    multiplanar, axial or 3D render; a toggle that shows the brain mask the model used (blue)."""

    MISSING = (
        "*3D viewer unavailable: NiiVue is not installed. Run `npm ci` in the app folder (see README). "
        "The PNG montage below shows the result.*"
    )
    """What to show in its place when NiiVue is not installed."""

    def __init__(self, value: str = "", **kwargs) -> None:
        head = f'<script src="{file_url(NIIVUE_JS)}"></script>' if NIIVUE_JS.is_file() else None
        super().__init__(
            value=value,
            html_template=(HERE / "viewer.html").read_text(),
            css_template=(HERE / "viewer.css").read_text(),
            js_on_load=(HERE / "viewer.js").read_text(),
            head=head,
            padding=False,
            **kwargs,
        )

    @staticmethod
    def available() -> bool:
        """Whether NiiVue is installed (``npm ci``); without it the widget says so and the PNG montage remains."""
        return NIIVUE_JS.is_file()
