"""Behind a real nginx with a short proxy_read_timeout, a queued job longer than that timeout
completes with all its progress (SSE + heartbeats), while a synchronous request of the same work
through the same proxy gets a 504: the failure this design avoids."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import stroke_seg
from apphelpers import free_port, launched_app, wait_http
from conftest import require
from stroke_seg.models.unet import WEIGHTS_PATH
from stroke_seg.synthetic import generator as synth

pytestmark = [pytest.mark.proxy, pytest.mark.slow]

PROXY_TIMEOUT_S = 2
"""The gateway's idle timeout: shorter than a third of the job (about 9 s here), longer than the app's 1 s heartbeat."""
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log {tmp}/nginx-access.log;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  client_max_body_size 200m;
  client_body_buffer_size 32m;   # keep uploads in memory (workers may not write to the test's tmp dir)
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{port};
    # a gateway that cuts any response idle for {timeout} s (as HF Spaces cut at ~60 s)
    proxy_read_timeout {timeout}s;
    proxy_send_timeout {timeout}s;
    location /sync/ {{
      proxy_pass http://127.0.0.1:{sync_port}/;
    }}
    location / {{
      proxy_pass http://127.0.0.1:{app_port};
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      # server-sent events must stream, not be buffered
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_cache off;
      chunked_transfer_encoding on;
    }}
  }}
}}
"""


def _sync_server(case_dir: Path, stop: threading.Event):
    """A plain synchronous HTTP endpoint doing the same work in one request (what a naive POST /segment does)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            try:
                r = stroke_seg.segment(
                    case_dir, model="unet", config=stroke_seg.SegmentConfig(mode="accurate"), should_cancel=stop.is_set
                )
                body = json.dumps(r.to_dict()).encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)
            except (stroke_seg.Cancelled, BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_long_job_survives_idle_timeout_proxy_but_sync_request_gets_504(tmp_path):
    require(NGINX is not None, "nginx is not installed (Debian package nginx)")
    require(WEIGHTS_PATH.is_file(), f"U-Net weights missing at {WEIGHTS_PATH}")
    from gradio_client import Client, handle_file

    case_dir = synth.make_case(33, "territorial", synth.Acquisition(voxel_size=(1.5, 1.5, 1.5))).save(tmp_path / "case")
    stop = threading.Event()
    sync = _sync_server(case_dir, stop)
    with launched_app(tmp_path, STROKE_SEG_CONCURRENCY="1") as (app_url, _log):
        port = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                tmp=tmp_path,
                port=port,
                app_port=app_url.rsplit(":", 1)[1].strip("/"),
                sync_port=sync.server_address[1],
                timeout=PROXY_TIMEOUT_S,
            )
        )
        proc = subprocess.Popen(
            [NGINX, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            proxy = f"http://127.0.0.1:{port}/"
            wait_http(proxy, timeout=20)
            client = Client(proxy, verbose=False)
            t0 = time.monotonic()
            job = client.submit(
                handle_file(str(case_dir / "dwi.nii.gz")),
                handle_file(str(case_dir / "adc.nii.gz")),
                None,
                handle_file(str(case_dir / "mask.nii.gz")),
                "unet",
                "accurate",
                api_name="/segment",
            )
            updates, last = [], None
            while not job.done():
                st = job.status()
                if st.progress_data:
                    p = st.progress_data[-1]
                    if (p.progress, p.desc) != last:
                        last = (p.progress, p.desc)
                        updates.append((time.monotonic() - t0, p.progress, p.desc))
                time.sleep(0.05)
            mask_path, report, *_ = job.result()
            duration = time.monotonic() - t0
            assert duration >= 3 * PROXY_TIMEOUT_S, (
                f"job took only {duration:.1f} s; it must outlast the proxy timeout 3x"
            )
            assert Path(mask_path).is_file() and report["model"] == "unet" and report["mode"] == "accurate"
            windows = [u for u in updates if "window" in (u[2] or "")]
            assert len(windows) >= 3, updates
            assert [u[1] for u in updates if u[1] is not None] == sorted(u[1] for u in updates if u[1] is not None)
            # the same work as one synchronous request through the same proxy: the gateway cuts it
            t1 = time.monotonic()
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(
                    urllib.request.Request(f"{proxy}sync/segment", data=b"{}", method="POST"), timeout=60
                )
            assert info.value.code == 504
            assert time.monotonic() - t1 < duration  # cut at the timeout, long before the work could finish
        finally:
            stop.set()
            proc.terminate()
            proc.wait(10)
            sync.shutdown()
