"""Run ``ivfuse serve`` as a real subprocess on a free port, for the browser and load tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from .conftest import REPO

# A server that starts on a busy 2-core machine: importing torch and loading both networks.
START_TIMEOUT = 180


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextmanager
def running_server(workdir: Path, *serve_args: str, launcher: tuple[str, ...] = ("-m", "ivfuse")) -> Iterator[RunningServer]:
    """``python <launcher> serve --host 127.0.0.1 --port 0 <serve_args>``, ready to answer.

    The server runs with its working folder, ``TMPDIR`` and ``HOME`` inside ``workdir`` (``cwd``,
    ``tmp``, ``home``), so whatever it writes can be found; its stderr goes to
    ``workdir/logs/stderr.txt``. It is stopped (SIGINT, then SIGKILL) on exit.
    """
    folders = {name: workdir / name for name in ("cwd", "tmp", "home", "logs")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    # No bytecode caching: Python itself would write __pycache__ files beside freshly edited sources.
    env.update(TMPDIR=str(folders["tmp"]), HOME=str(folders["home"]), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")])))
    stderr_path = folders["logs"] / "stderr.txt"
    command = [sys.executable, *launcher, "serve", "--host", "127.0.0.1", "--port", "0", *serve_args]
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(command, cwd=folders["cwd"], env=env, stdout=subprocess.PIPE, stderr=stderr)
    try:
        url = _wait_for_address(process, stderr_path)
        server = RunningServer(url, process, stderr_path)
        _wait_until_healthy(server)
        yield server
    finally:
        _stop(process)


def _wait_for_address(process: subprocess.Popen, stderr_path: Path) -> str:
    """The URL from the server's "listening on http://..." line (read in a thread: readline blocks).

    The thread keeps reading stdout afterwards, so the server never blocks on a full pipe.
    """
    found: list[str] = []
    announced = threading.Event()

    def read() -> None:
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            if not found and "listening on http://" in line:
                found.append(line.split("listening on ")[1].split()[0].rstrip("/"))
                announced.set()
        announced.set()

    threading.Thread(target=read, daemon=True).start()
    announced.wait(START_TIMEOUT)
    if not found:
        _stop(process)
        raise RuntimeError(f"ivfuse serve did not start; stderr:\n{stderr_path.read_text(errors='replace')[-3000:]}")
    return found[0]


def _wait_until_healthy(server: RunningServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(trust_env=False, timeout=10) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(f"{server.url}/api/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if server.process.poll() is not None:
                break
            time.sleep(0.2)
    raise RuntimeError(f"ivfuse serve never answered /api/health; stderr:\n{server.stderr()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(2)  # SIGINT: uvicorn's graceful shutdown
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
