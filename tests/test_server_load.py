"""``ivfuse serve`` under load and abuse: a real server process, a bounded client, hostile requests.

200 requests from 8 concurrent clients must all be answered correctly (the p95 latency is
printed), while oversize, non-image, incomplete, mismatched, path-named and slow uploads get
their 4xx answers; ``/api/health`` answers throughout, the server's peak memory stays bounded,
and the server writes no file outside its temporary folder (a Python audit hook in the server
process reports every file it opens for writing, renames, removes or creates).
"""

from __future__ import annotations

import io
import os
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'ivfuse[serve]'")
pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'ivfuse[serve]'")

from ivfuse.io import encode_image, read_image  # noqa: E402
from ivfuse.segmenter import Segmenter  # noqa: E402

from .conftest import EXAMPLES, REPO  # noqa: E402
from .server_process import running_server  # noqa: E402

if not Path("/proc/self/status").is_file():
    pytest.skip("reads the server's memory from /proc (Linux)", allow_module_level=True)

REQUESTS, CLIENTS = 200, 8
UPLOAD_LIMIT_MB, PIXEL_LIMIT, UPLOAD_TIMEOUT = 1, 1_000_000, 2.0
# Peak resident memory may grow this much over the warmed-up server: room for 2 workers on
# 160x120 images and 1 MB uploads, far below what one decoded 48-megapixel "bomb" would take.
MEMORY_GROWTH_LIMIT = 250 * 2**20

# Runs `ivfuse serve` (the real CLI) with an audit hook that reports, on stderr, every write
# outside the folder given as first argument.
WATCHER = r"""
import os, sys
allowed = os.path.realpath(sys.argv.pop(1))
WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = {"os.rename": (0, 1), "os.remove": (0,), "os.mkdir": (0,), "os.rmdir": (0,), "os.symlink": (1,),
           "os.link": (1,), "os.truncate": (0,), "os.chmod": (0,), "os.utime": (0,)}

def outside(path):
    if path is None or isinstance(path, int):
        return False
    real = os.path.realpath(os.fsdecode(path))
    return real != os.devnull and real != allowed and not real.startswith(allowed + os.sep)

def watch(event, args):
    if event == "open":
        path, mode, flags = args
        paths = [path] if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITING else []
    else:
        paths = [args[i] for i in CHANGES.get(event, ())]
    for path in paths:
        if outside(path):
            sys.stderr.write(f"WRITE OUTSIDE {allowed}: {event} {path!r}\n")

sys.addaudithook(watch)
from ivfuse.cli import main
main()
"""


def crops() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Seven real 160x120 pairs: the tiny MSRS frames and a window of an example with objects."""
    tiny = REPO / "tests" / "data" / "tiny" / "MSRS"
    pairs = [(path.stem, read_image(path), read_image(tiny / "vi" / path.name)) for path in sorted((tiny / "ir").glob("*.png"))]
    window = (slice(120, 240), slice(480, 640))
    pairs.append(("00055D", read_image(EXAMPLES / "ir" / "00055D.png")[window], read_image(EXAMPLES / "vi" / "00055D.png")[window]))
    return pairs


def rss_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def pixels(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def slow_upload(address: tuple[str, int]) -> tuple[bytes, float]:
    """Send headers, then one body byte every 0.25 s, until the server answers; its answer and the wait."""
    began = time.monotonic()
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(b"POST /api/fuse HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000\r\n\r\n--b\r\n")
        sock.settimeout(0.25)
        answer = b""
        while time.monotonic() - began < 30:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                sock.sendall(b"x")
                continue
            if not chunk:
                break
            answer += chunk
            if b"}" in answer:
                break
    return answer, time.monotonic() - began


def test_server_under_load_and_abuse(tmp_path):
    torch.set_num_threads(1)
    pairs = crops()
    segmenter = Segmenter()
    expected = {}
    for name, ir, vis in pairs:
        labels, _ = segmenter.segment(ir, vis)
        expected[name] = (np.round(segmenter.fuser.fuse(ir, vis) * 255).astype(np.uint8), labels)
    uploads = {name: {"ir": (f"{name}.png", encode_image(ir)), "vis": (f"{name}.png", encode_image(vis))} for name, ir, vis in pairs}
    good = uploads["00055D"]

    with running_server(tmp_path, "--threads", "1", "--workers", "2", "--queue", "16", "--max-upload-mb", str(UPLOAD_LIMIT_MB),
                        "--max-pixels", str(PIXEL_LIMIT), "--upload-timeout", str(UPLOAD_TIMEOUT),
                        launcher=("-c", WATCHER, str(tmp_path / "tmp"))) as server, \
            httpx.Client(base_url=server.url, trust_env=False, timeout=60,
                         limits=httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)) as client:
        pid = server.process.pid
        for name in expected:  # warm up: first calls allocate the networks' buffers
            assert client.post("/api/fuse", files=uploads[name]).status_code == 200
        baseline = rss_bytes(pid, "VmRSS")

        stop = threading.Event()
        health: list[tuple[int, float]] = []

        def poll_health() -> None:
            with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as probe:
                while not stop.is_set():
                    began = time.monotonic()
                    try:
                        status = probe.get("/api/health").status_code
                    except httpx.TransportError:
                        status = 0
                    health.append((status, time.monotonic() - began))
                    time.sleep(0.05)

        def one_request(index: int) -> tuple[str, str, float, str]:
            name = list(expected)[index % len(expected)]
            endpoint = "/api/fuse" if index % 2 == 0 else "/api/segment"
            began = time.monotonic()
            answer = client.post(endpoint, files=uploads[name])
            latency = time.monotonic() - began
            if answer.status_code != 200 or answer.headers["content-type"] != "image/png":
                return name, endpoint, latency, f"{answer.status_code}: {answer.text[:200]}"
            fused, labels = expected[name]
            got = pixels(answer.content)
            if endpoint == "/api/fuse":
                error = None if got.shape == fused.shape and np.abs(got.astype(int) - fused).max() <= 1 else "fused image differs"
            else:
                error = None if got.shape == labels.shape and (got == labels).mean() >= 0.999 else "labels differ"
            return name, endpoint, latency, error

        def abuse() -> dict[str, httpx.Response | tuple[bytes, float]]:
            """Hostile requests, sent while the load runs; slow clients hold connections meanwhile."""
            held = []
            for _ in range(20):  # slowloris: request lines without an end of headers, kept open
                sock = socket.create_connection(address)
                sock.sendall(b"POST /api/fuse HTTP/1.1\r\nHost: test\r\n")
                held.append(sock)
            bomb = io.BytesIO()
            Image.new("L", (8000, 6000)).save(bomb, format="PNG")  # 48 megapixels in about 50 kB
            ir = good["ir"]
            answers = {
                "oversize": client.post("/api/fuse", files={"ir": ir, "vis": ("big.png", os.urandom(UPLOAD_LIMIT_MB * 2**20 + 1))}),
                "body_too_large": client.post("/api/fuse", files={"ir": ir, "vis": good["vis"], "x": ("x", bytes(6 * 2**20))}),
                "bomb": client.post("/api/fuse", files={"ir": ("bomb.png", bomb.getvalue()), "vis": good["vis"]}),
                "not_image": client.post("/api/segment", files={"ir": ir, "vis": ("notes.txt", b"just text\n" * 100)}),
                "missing": client.post("/api/fuse", files={"ir": ir}),
                "sizes_differ": client.post("/api/fuse", files={"ir": ir, "vis": ("other.png", encode_image(np.zeros((121, 160), np.float32)))}),
                "path_name_junk": client.post("/api/fuse", files={"ir": ("../../etc/passwd", b"root:x:0:0"), "vis": good["vis"]}),
                "path_name_image": client.post("/api/fuse", files={"ir": ("../../etc/passwd", ir[1]), "vis": ("/tmp/x/../../vis.png", good["vis"][1])}),
                "slow_body": slow_upload(address),
            }
            for sock in held:
                sock.close()
            return answers

        address = (server.url.split("//")[1].split(":")[0], int(server.url.rsplit(":", 1)[1]))
        poller = threading.Thread(target=poll_health)
        poller.start()
        try:
            with ThreadPoolExecutor(CLIENTS + 1) as pool:
                hostile = pool.submit(abuse)
                results = list(pool.map(one_request, range(REQUESTS)))
                hostile = hostile.result()
        finally:
            stop.set()
            poller.join()
        peak = rss_bytes(pid, "VmHWM")

    latencies = sorted(latency for _, _, latency, _ in results)
    p95 = latencies[int(0.95 * len(latencies)) - 1]
    print(f"\n{REQUESTS} requests (fuse + segment, 160x120) from {CLIENTS} clients: p95 latency {p95 * 1000:.0f} ms, "
          f"median {statistics.median(latencies) * 1000:.0f} ms; health checks {len(health)}, slowest "
          f"{max(t for _, t in health) * 1000:.0f} ms; server RSS {baseline / 2**20:.0f} MB warm, peak {peak / 2**20:.0f} MB")

    assert [result for result in results if result[3]] == []
    expected_errors = {
        "oversize": (413, "vis file 'big.png': larger than the limit of 1 MB per file"),
        "body_too_large": (413, "request body of"),
        "bomb": (413, "ir file 'bomb.png': 8000x6000 is 48.0 megapixels, more than the limit of 1"),
        "not_image": (415, "vis file 'notes.txt': cannot read image"),
        "missing": (400, "missing file field 'vis'"),
        "sizes_differ": (422, "vis file 'other.png': size 160x121 differs from ir file '00055D.png' (160x120)"),
        "path_name_junk": (415, "ir file '../../etc/passwd': cannot read image"),
    }
    for case, (status, message) in expected_errors.items():
        answer = hostile[case]
        assert (case, answer.status_code) == (case, status)
        assert answer.json()["error"].startswith(message), case
    assert hostile["path_name_image"].status_code == 200  # a file name is only a label, never a path
    slow_answer, waited = hostile["slow_body"]
    assert slow_answer.startswith(b"HTTP/1.1 408") and b"request body not received within 2 s" in slow_answer
    assert UPLOAD_TIMEOUT <= waited < UPLOAD_TIMEOUT + 10

    assert health and all(status == 200 for status, _ in health), "health check failed while under load"
    assert max(t for _, t in health) < 5
    assert peak - baseline < MEMORY_GROWTH_LIMIT, f"peak RSS {peak / 2**20:.0f} MB vs {baseline / 2**20:.0f} MB warm"

    log = server.stderr()
    assert "WRITE OUTSIDE" not in log, [line for line in log.splitlines() if "WRITE OUTSIDE" in line]
    assert "Traceback" not in log
    # Uploads are parsed in memory: the server wrote nothing at all, not even to its temporary folder.
    for folder in ("cwd", "tmp", "home"):
        assert list((tmp_path / folder).rglob("*")) == [], folder
