"""Launch the real app (``python app.py``) in a subprocess on a free port, for integration tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def launched_app(tmp: Path, *, with_process: bool = False, **env: str):
    """Start app.py with ``env`` added; yields (base_url, log_path), plus the Popen when ``with_process``;
    stops it afterwards."""
    port = free_port()
    log_path = tmp / f"app-{port}.log"
    full_env = dict(
        os.environ,
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        STROKE_SEG_CACHE_DIR=str(tmp / f"cache-{port}"),
        GRADIO_ANALYTICS_ENABLED="False",
        **env,
    )
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        t0 = time.monotonic()
        wait_http(url)
        bind_s = time.monotonic() - t0
        (tmp / f"app-{port}.bind_seconds").write_text(f"{bind_s:.2f}")
        yield (url, log_path, proc) if with_process else (url, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def log_text(log_path: Path) -> str:
    return log_path.read_text(errors="replace")
