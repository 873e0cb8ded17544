"""The HTTP API of ``ivfuse serve``, in process: answers, every error with its status and message."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import sys
import warnings

import httpx
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'ivfuse[serve]'")

from ivfuse.cli import main  # noqa: E402
from ivfuse.io import encode_image, read_image  # noqa: E402
from ivfuse.metrics import compute_all, to_gray255  # noqa: E402
from ivfuse.segmenter import Segmenter  # noqa: E402
from ivfuse.server import SEED_METRICS, ServerSettings, create_app  # noqa: E402

from .conftest import EXAMPLES, REPO  # noqa: E402

TINY = REPO / "tests" / "data" / "tiny" / "MSRS"


def png_bytes(array: np.ndarray) -> bytes:
    return encode_image(array)


def crop(path, top=120, left=480, height=120, width=160) -> np.ndarray:
    """A 160x120 window of an example frame holding cars, people and a car stop."""
    return read_image(path)[top:top + height, left:left + width]


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    torch.set_num_threads(1)
    return Segmenter()


@pytest.fixture(scope="module")
def pair() -> dict:
    ir, vis = crop(EXAMPLES / "ir" / "00055D.png"), crop(EXAMPLES / "vi" / "00055D.png")
    return {"ir": ir, "vis": vis, "files": {"ir": ("ir.png", png_bytes(ir)), "vis": ("vis.png", png_bytes(vis))}}


def in_process(app):
    """A client calling ``app`` directly (no sockets)."""
    with warnings.catch_warnings():
        # Starlette's test client warns that it will move from httpx to httpx2; it works with httpx.
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    return TestClient(app)


@pytest.fixture(scope="module")
def client(segmenter):
    with in_process(create_app(ServerSettings(max_upload_bytes=200_000, max_pixels=1_000_000), segmenter=segmenter)) as client:
        yield client


def decode(content: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


def test_health_reports_ok_and_limits(client):
    answer = client.get("/api/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok" and body["limits"]["max_upload_bytes"] == 200_000 and body["limits"]["max_pixels"] == 1_000_000


def test_default_limits_are_25_mb_and_40_megapixels():
    settings = ServerSettings()
    assert settings.max_upload_bytes == 25 * 1024 * 1024 and settings.max_pixels == 40_000_000


def test_page_is_self_contained(client):
    answer = client.get("/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    for element in ('id="ir-file"', 'id="vis-file"', 'id="fuse-button"', 'id="fused-image"', 'id="overlay-image"', 'id="legend"', 'id="metrics"'):
        assert element in page
    # No CDN or other internet resource, and the browser is told to load none.
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert "default-src 'self'" in answer.headers["content-security-policy"]


def test_examples_are_the_bundled_pairs(client):
    listing = client.get("/api/examples").json()
    assert [example["name"] for example in listing] == ["00004N", "00055D"]
    for example in listing:
        assert client.get(example["ir"]).content == (EXAMPLES / "ir" / f"{example['name']}.png").read_bytes()
        assert client.get(example["vis"]).content == (EXAMPLES / "vi" / f"{example['name']}.png").read_bytes()
    missing = client.get("/api/examples/..%2F..%2Fetc%2Fpasswd/ir")
    assert missing.status_code == 404 and "error" in missing.json()


def test_fuse_answers_the_fused_png_of_input_size(client, segmenter, pair):
    answer = client.post("/api/fuse", files=pair["files"])
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    image = decode(answer.content)
    assert image.size == (160, 120) and image.mode == "RGB"
    expected = np.round(np.clip(segmenter.fuser.fuse(pair["ir"], pair["vis"]), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(image), expected)


def test_fuse_keeps_a_grey_visible_image_grey(client, pair):
    grey_vis = np.asarray(Image.fromarray((pair["vis"] * 255).round().astype(np.uint8)).convert("L"), np.float32) / 255
    answer = client.post("/api/fuse", files={"ir": pair["files"]["ir"], "vis": ("grey.png", png_bytes(grey_vis))})
    assert answer.status_code == 200 and decode(answer.content).mode == "L"


def test_segment_answers_class_ids(client, segmenter, pair):
    answer = client.post("/api/segment", files=pair["files"])
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    image = decode(answer.content)
    assert image.size == (160, 120) and image.mode == "L"
    labels, _ = segmenter.segment(pair["ir"], pair["vis"])
    np.testing.assert_array_equal(np.asarray(image), labels)
    assert len(np.unique(labels)) > 1  # the window holds objects, so the check is not of an empty map


def test_analyze_gives_images_legend_and_the_six_metrics(client, segmenter, pair):
    answer = client.post("/api/analyze", files=pair["files"])
    assert answer.status_code == 200
    result = answer.json()
    labels, fused = segmenter.segment(pair["ir"], pair["vis"])
    expected = compute_all(to_gray255(pair["ir"]), to_gray255(pair["vis"]), to_gray255(fused), metrics=SEED_METRICS)
    assert list(result["metrics"]) == list(SEED_METRICS)
    assert result["metrics"] == pytest.approx(expected)
    shares = {cls["name"]: cls["share"] for cls in result["classes"]}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["car"] == pytest.approx((labels == 1).mean())
    assert result["classes"][1]["color"] == "#400080"  # MSRS palette, car
    for key in ("fused", "overlay", "labels"):
        assert result[key].startswith("data:image/png;base64,")
    fused_png = client.post("/api/fuse", files=pair["files"]).content
    assert base64.b64decode(result["fused"].split(",", 1)[1]) == fused_png


@pytest.mark.parametrize(
    "files, status, message",
    [
        ({"ir": ("a.png", "IR")}, 400, "missing file field 'vis'"),
        ({"vis": ("b.png", "VIS")}, 400, "missing file field 'ir'"),
        ({"ir": ("a.png", b""), "vis": ("b.png", "VIS")}, 400, "ir file 'a.png': empty file"),
        ({"ir": ("../../etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n"), "vis": ("b.png", "VIS")}, 415,
         "ir file '../../etc/passwd': cannot read image (not a PNG, JPEG, BMP or TIFF"),
        ({"ir": ("a.png", "IR"), "vis": ("notes.txt", b"hello")}, 415, "vis file 'notes.txt': cannot read image"),
        ({"ir": ("a.png", "IR"), "vis": ("big.png", b"\0" * 200_001)}, 413, "vis file 'big.png': larger than the limit"),
        ({"ir": ("a.png", "IR"), "vis": ("other.png", "OTHER_SIZE")}, 422, "vis file 'other.png': size 161x120 differs from ir file 'a.png' (160x120)"),
        ({"ir": ("a.png", "IR"), "vis": ("cut.png", "TRUNCATED")}, 422, "vis file 'cut.png': cannot read image"),
        ({"ir": ("bomb.png", "BOMB"), "vis": ("b.png", "VIS")}, 413, "ir file 'bomb.png': 2000x1000 is 2.0 megapixels, more than the limit of 1"),
    ],
)
@pytest.mark.parametrize("endpoint", ["/api/fuse", "/api/segment", "/api/analyze"])
def test_bad_uploads_get_a_4xx_json_error_naming_the_file(client, pair, endpoint, files, status, message):
    vis_bytes = pair["files"]["vis"][1]
    stand_ins = {
        "IR": pair["files"]["ir"][1],
        "VIS": vis_bytes,
        "OTHER_SIZE": png_bytes(np.zeros((120, 161), np.float32)),
        "TRUNCATED": vis_bytes[: len(vis_bytes) // 2],
        # The header of a 2-megapixel PNG with its pixel data cut off: 413 (not 422 "truncated")
        # shows that the size is checked from the header, before decoding is tried.
        "BOMB": png_bytes(np.zeros((1000, 2000), np.float32))[:100],
    }
    files = {field: (name, stand_ins.get(data, data)) for field, (name, data) in files.items()}
    answer = client.post(endpoint, files=files)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error.startswith(message) and "\n" not in error


def test_malformed_requests_get_json_errors(client, pair):
    not_multipart = client.post("/api/fuse", content=b"ir=1", headers={"content-type": "application/x-www-form-urlencoded"})
    assert not_multipart.status_code == 415 and "multipart/form-data" in not_multipart.json()["error"]
    broken = client.post("/api/fuse", content=b"--xyz\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert broken.status_code == 400 and broken.json()["error"]
    twice = client.post("/api/fuse", files=[("ir", ("a.png", pair["files"]["ir"][1])), ("ir", ("b.png", pair["files"]["ir"][1]))])
    assert twice.status_code == 400 and twice.json()["error"] == "field 'ir' sent twice"
    assert client.get("/nothing").json() == {"error": "Not Found: GET /nothing"}
    assert client.get("/api/fuse").status_code == 405 and "error" in client.get("/api/fuse").json()


def test_body_over_two_files_is_refused(client, pair):
    answer = client.post("/api/fuse", files={"ir": pair["files"]["ir"], "vis": pair["files"]["vis"], "extra": ("x", b"\0" * 600_000)})
    assert answer.status_code == 413 and "request body" in answer.json()["error"]


def test_requests_beyond_workers_and_queue_are_turned_away(segmenter, pair):
    app = create_app(ServerSettings(workers=1, queue=0), segmenter=segmenter)

    async def burst():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await asyncio.gather(*(client.post("/api/fuse", files=pair["files"]) for _ in range(4)))

    answers = asyncio.run(burst())
    codes = sorted(answer.status_code for answer in answers)
    assert codes[0] == 200 and codes[-1] == 503
    busy = next(answer for answer in answers if answer.status_code == 503)
    assert busy.json()["error"].startswith("server busy") and busy.headers["retry-after"] == "1"


def test_slow_upload_times_out_with_408(segmenter, pair):
    app = create_app(ServerSettings(upload_timeout=0.3), segmenter=segmenter)
    head = b"--b\r\nContent-Disposition: form-data; name=\"ir\"; filename=\"a.png\"\r\n\r\n"

    async def trickle():
        yield head
        await asyncio.sleep(2)
        yield b"never"

    async def send():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/api/fuse", content=trickle(), headers={"content-type": "multipart/form-data; boundary=b"})

    answer = asyncio.run(send())
    assert answer.status_code == 408 and answer.json()["error"] == "request body not received within 0.3 s"


class _NotInstalled:
    """An import hook that makes a package look uninstalled, as Python reports it then."""

    def __init__(self, package: str):
        self.package = package

    def find_spec(self, name, path=None, target=None):
        if name == self.package or name.startswith(self.package + "."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@pytest.mark.parametrize("package", ["fastapi", "anyio"])  # anyio: what a fresh install without the extra misses first
def test_serve_without_the_extra_says_how_to_install(monkeypatch, package):
    import ivfuse

    # Forget the imported server module (and the package), so that the command imports them again.
    monkeypatch.delattr(ivfuse, "server", raising=False)
    for name in [name for name in sys.modules if name == "ivfuse.server" or name.split(".")[0] == package]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NotInstalled(package), *sys.meta_path])
    outcome = CliRunner().invoke(main, ["serve"])
    assert outcome.exit_code == 2
    assert outcome.output.strip().count("\n") == 0
    assert 'pip install "ivfuse[serve]"' in outcome.output


def test_serve_on_a_busy_port_fails_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        outcome = CliRunner().invoke(main, ["serve", "--port", str(port)])
    assert outcome.exit_code == 2
    assert outcome.output.strip() == f"error: 127.0.0.1:{port}: cannot listen (Address already in use)"


def test_onnxruntime_backend_serves_the_same_image(segmenter, pair):
    pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'ivfuse[onnx]'")
    with in_process(create_app(ServerSettings(backend="onnxruntime"))) as client:
        answer = client.post("/api/fuse", files=pair["files"])
    assert answer.status_code == 200
    expected = np.round(np.clip(segmenter.fuser.fuse(pair["ir"], pair["vis"]), 0, 1) * 255).astype(int)
    assert np.abs(np.asarray(decode(answer.content)).astype(int) - expected).max() <= 1
