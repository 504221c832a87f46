"""The app in-process: its single error mapping (``app._guard``): library errors keep their message, unexpected
errors become a short message while the traceback goes to the server log; and the queue's polling intervals."""

from __future__ import annotations

import asyncio
import logging

import pytest

import stroke_seg
from conftest import require_module

gr = require_module("gradio")
import app  # noqa: E402  (an import error inside app.py must fail, not skip)

pytestmark = pytest.mark.app


async def _steps(exc: BaseException):
    yield "tick", "working"
    raise exc


def _drain(exc: BaseException) -> tuple[list, BaseException]:
    seen: list = []

    async def run():
        try:
            async for item in app._guard(lambda: _steps(exc), {"dwi": None}):
                seen.append(item)
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            return err
        return None

    return seen, asyncio.run(run())


def test_library_error_becomes_gr_error_with_its_message():
    seen, err = _drain(stroke_seg.InvalidImageError("dwi.nii.gz: expected a 3D image, but got shape (4, 4)"))
    assert seen == [("tick", "working")]  # what the user already had was delivered first
    assert isinstance(err, gr.Error)
    assert "dwi.nii.gz: expected a 3D image" in err.message


def test_unexpected_error_is_short_for_the_user_and_logged_with_traceback(caplog):
    with caplog.at_level(logging.ERROR, logger="stroke_seg.app"):
        _, err = _drain(ZeroDivisionError("secret internal detail"))
    assert isinstance(err, gr.Error)
    assert "ZeroDivisionError" in err.message and "logged" in err.message
    assert "secret internal detail" not in err.message and "Traceback" not in err.message
    record = next(r for r in caplog.records if r.name == "stroke_seg.app")
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError


def test_the_queue_polls_at_the_apps_intervals_and_an_unknown_queue_keeps_its_own(caplog):
    queue = app.demo._queue
    for name, seconds in app.QUEUE_POLL_S.items():  # a Gradio upgrade that renames them fails here
        assert getattr(queue, name) == seconds
    other = type("OtherQueue", (), {"sleep_when_free": 0.001})()
    with caplog.at_level(logging.WARNING, logger="stroke_seg.app"):
        app.calm_queue(other)
    assert other.sleep_when_free == 0.01
    assert not hasattr(other, "progress_update_sleep_when_free")
    assert "progress_update_sleep_when_free" in caplog.text
