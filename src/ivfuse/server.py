"""``ivfuse serve``: the web demo page and the HTTP API, one FastAPI app around one loaded model.

:func:`create_app` loads a :class:`~ivfuse.segmenter.Segmenter` (fusion + segmentation network)
once and answers:

* ``GET /``: the demo page (``ivfuse/web/index.html``, self-contained: no internet resources).
* ``GET /api/health``: ``{"status": "ok", ...}`` with the limits and the current load.
* ``GET /api/examples``, ``GET /api/examples/{name}/{ir|vis}``: the bundled example pairs.
* ``POST /api/fuse``: multipart file fields ``ir`` and ``vis`` -> fused ``image/png``.
* ``POST /api/segment``: same fields -> ``image/png`` of MSRS class ids (one byte per pixel).
* ``POST /api/analyze``: same fields -> JSON with the fused image, the palette overlay, the class
  ids (PNG data URLs), the share of each class and the six seed metrics; the page uses it.

Every error is JSON ``{"error": "<one line naming the field and file>"}`` with a 4xx status
(503 when the server is busy). Uploads are parsed from the request stream into memory: nothing
is written to disk, an upload over the size limit is refused as soon as it passes it, and an
image's pixel count is read from its header before anything is decoded. The network runs in at
most ``workers`` threads; ``queue`` more requests may wait, further ones are refused at once.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import anyio
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from . import __version__
from .classes import CLASS_NAMES, NUM_CLASSES, PALETTE
from .io import ImageReadError, ImageTooLargeError, decode_image, encode_image, image_size
from .metrics import HIGHER_IS_BETTER, compute_all, to_gray255
from .segmenter import Segmenter, overlay

#: The metrics the page shows (the six that fusion papers compare first), in this order.
SEED_METRICS = ("Qabf", "EN", "PSNR", "SF", "SD", "VIF")
#: Multipart file fields of the POST endpoints.
FIELDS = ("ir", "vis")
MIB = 1024 * 1024
# Multipart boundaries and part headers around the two files; a body larger than the files'
# limit plus this cannot be a valid request.
_FORM_OVERHEAD = 64 * 1024

logger = logging.getLogger("ivfuse.server")


@dataclass(frozen=True)
class ServerSettings:
    """What :func:`create_app` loads and the limits it enforces.

    Args:
        fusion_weights, segmentation_weights: ``.safetensors`` files; ``None``: the shipped ones.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``, ...).
        backend: ``"torch"`` or ``"onnxruntime"`` (CPU; the ``onnx`` extra), as for :class:`~ivfuse.fuser.Fuser`.
        max_upload_bytes: largest accepted file per field (413 above).
        max_pixels: largest accepted image, width x height (413 above), checked from the header.
        workers: requests running the network at the same time.
        queue: requests that may wait for a worker; more are refused with 503.
        upload_timeout: seconds a client may take to send its request body (408 after).
        upload_memory: bytes of uploads held in memory by all requests together (503 above);
            with ``workers`` it bounds the server's memory.
        max_connections: open connections; uvicorn answers further ones with a plain 503.

    Example:
        >>> ServerSettings(max_upload_bytes=5 * MIB, workers=1).max_pixels
        40000000
    """

    fusion_weights: str | os.PathLike | None = None
    segmentation_weights: str | os.PathLike | None = None
    device: str = "cpu"
    backend: str = "torch"
    max_upload_bytes: int = 25 * MIB
    max_pixels: int = 40_000_000
    workers: int = 2
    queue: int = 16
    upload_timeout: float = 60.0
    upload_memory: int = 256 * MIB
    max_connections: int = 256

    def __post_init__(self):
        if min(self.max_upload_bytes, self.max_pixels, self.workers, self.upload_timeout, self.upload_memory, self.max_connections) <= 0:
            raise ValueError("upload size, pixel, worker, timeout, memory and connection limits must be positive")
        if self.queue < 0:
            raise ValueError("queue must be >= 0")


class ApiError(Exception):
    """A request that cannot be answered: HTTP ``status`` and a one-line ``message`` for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Upload:
    """One file field of a request, held in memory."""

    field: str
    filename: str
    data: bytes

    @property
    def label(self) -> str:
        """How error messages name it: the field and the client's file name, quoted (never used as a path)."""
        name = self.filename if len(self.filename) <= 80 else self.filename[:77] + "..."
        return f"{self.field} file {name!r}" if name else f"{self.field} file"


class _MemoryBudget:
    """Bytes of uploads held by all requests together; only touched from the event loop, so no lock."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class _Workers:
    """At most ``workers`` requests run the network; ``queue`` more wait, others are turned away."""

    def __init__(self, workers: int, queue: int):
        self.workers, self.queue = workers, queue
        self.semaphore = asyncio.Semaphore(workers)
        self.running = self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.running >= self.workers and self.waiting >= self.queue:
            raise ApiError(503, f"server busy: {self.running} requests running and {self.waiting} waiting; retry in a moment")
        self.waiting += 1
        try:
            await self.semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self.semaphore.release()


class _PairReader:
    """Streams a multipart body into memory: the ``ir`` and ``vis`` files, each within the size limit.

    Data of other fields is parsed past but not kept. Bytes kept are charged to the shared
    :class:`_MemoryBudget` until :meth:`release`.
    """

    def __init__(self, settings: ServerSettings, budget: _MemoryBudget):
        self.settings, self.budget = settings, budget
        self.held = 0
        self.files: dict[str, Upload] = {}
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._name: str | None = None
        self._filename = ""
        self._chunks: list[bytes] = []
        self._size = 0

    async def read(self, request: Request) -> tuple[Upload, Upload]:
        """The two uploads; :class:`ApiError` for anything else (wrong type, too large, too slow, missing)."""
        content_type, options = parse_options_header(request.headers.get("content-type", ""))
        if content_type != b"multipart/form-data" or not options.get(b"boundary"):
            raise ApiError(415, "expected a multipart/form-data body with the image files in fields 'ir' and 'vis'")
        body_limit = len(FIELDS) * self.settings.max_upload_bytes + _FORM_OVERHEAD
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > body_limit and "100-continue" in request.headers.get("expect", "").lower():
            # The client waits for "100 Continue" before sending; refusing now spares it the upload.
            raise ApiError(413, self._too_large_message(int(declared)))
        parser = MultipartParser(options[b"boundary"], self._callbacks())
        error, received = None, 0
        try:
            with anyio.fail_after(self.settings.upload_timeout):
                async for chunk in request.stream():
                    received += len(chunk)
                    if error is None:
                        error = self._feed(parser, chunk, received, body_limit)
                    # After an error the rest of the body is read and dropped (never kept), so the
                    # client is not cut off mid-upload and gets the answer; up to a bound.
                    if error is not None and received > 2 * body_limit:
                        break
                if error is None and received <= body_limit:
                    parser.finalize()
        except TimeoutError:
            raise ApiError(408, f"request body not received within {self.settings.upload_timeout:g} s") from None
        except ClientDisconnect:
            raise ApiError(400, "client disconnected before sending the whole request") from None
        except FormParserError as failure:
            raise ApiError(400, f"malformed multipart body ({failure})") from None
        if error is not None:
            raise error
        for field in FIELDS:
            if field not in self.files:
                raise ApiError(400, f"missing file field '{field}': send multipart/form-data with the files in fields 'ir' and 'vis'")
            if not self.files[field].data:
                raise ApiError(400, f"{self.files[field].label}: empty file")
        return self.files["ir"], self.files["vis"]

    def release(self) -> None:
        """Return the held bytes to the budget (the uploads are dropped by the caller)."""
        self.budget.give(self.held)
        self.held = 0

    def _feed(self, parser: MultipartParser, chunk: bytes, received: int, body_limit: int) -> ApiError | None:
        if received > body_limit:
            return ApiError(413, self._too_large_message(received))
        try:
            parser.write(chunk)
        except ApiError as refused:
            return refused
        except FormParserError as failure:
            return ApiError(400, f"malformed multipart body ({failure})")
        return None

    def _too_large_message(self, size: int) -> str:
        return (f"request body of {size / MIB:.1f} MB or more is larger than two files of "
                f"{self.settings.max_upload_bytes / MIB:g} MB allow")

    def _callbacks(self) -> dict[str, Callable]:
        def on_part_begin() -> None:
            self._headers, self._name, self._filename, self._chunks, self._size = {}, None, "", [], 0

        def on_header_field(data: bytes, start: int, end: int) -> None:
            self._field += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            self._headers[self._field.lower()] = self._headers.get(self._field.lower(), b"") + data[start:end]

        def on_header_end() -> None:
            self._field = b""

        def on_headers_finished() -> None:
            _, disposition = parse_options_header(self._headers.get(b"content-disposition", b""))
            name = disposition.get(b"name", b"").decode("utf-8", "replace")
            self._filename = disposition.get(b"filename", b"").decode("utf-8", "replace")
            if name in self.files:
                raise ApiError(400, f"field '{name}' sent twice")
            self._name = name if name in FIELDS else None

        def on_part_data(data: bytes, start: int, end: int) -> None:
            if self._name is None:
                return
            size = end - start
            self._size += size
            if self._size > self.settings.max_upload_bytes:
                label = Upload(self._name, self._filename, b"").label
                raise ApiError(413, f"{label}: larger than the limit of {self.settings.max_upload_bytes / MIB:g} MB per file")
            if not self.budget.take(size):
                raise ApiError(503, "server busy: too many uploads in memory; retry in a moment")
            self.held += size
            self._chunks.append(data[start:end])

        def on_part_end() -> None:
            if self._name is not None:
                self.files[self._name] = Upload(self._name, self._filename, b"".join(self._chunks))
            self._chunks = []

        return {
            "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
            "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data, "on_part_end": on_part_end,
        }


def check_pair(ir: Upload, vis: Upload, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` of an uploaded pair from the image headers, before any decoding.

    Raises:
        ApiError: 415 not a PNG/JPEG/BMP/TIFF image, 413 over ``max_pixels``, 422 sizes differ.
    """
    sizes = []
    for upload in (ir, vis):
        try:
            sizes.append(image_size(upload.data, upload.label, max_pixels=max_pixels))
        except ImageTooLargeError as error:
            raise ApiError(413, str(error)) from None
        except ImageReadError as error:
            raise ApiError(415, str(error)) from None
    if sizes[0] != sizes[1]:
        (ir_w, ir_h), (vis_w, vis_h) = sizes
        raise ApiError(422, f"{vis.label}: size {vis_w}x{vis_h} differs from {ir.label} ({ir_w}x{ir_h}); "
                            "the pair must be registered and of equal size (never resized)")
    return sizes[0]


def decode_pair(ir: Upload, vis: Upload, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Both uploads as float32 arrays in ``[0, 1]``: ``(H, W)`` or ``(H, W, 3)``.

    Raises:
        ApiError: 422 for a file whose header is fine but whose data is truncated or corrupt.
    """
    try:
        return tuple(decode_image(upload.data, upload.label, max_pixels=max_pixels) for upload in (ir, vis))
    except ImageReadError as error:
        raise ApiError(422, str(error)) from None


def fused_png(segmenter: Segmenter, ir: np.ndarray, vis: np.ndarray) -> bytes:
    """PNG bytes of the fused image: RGB for a colour visible image, grey for a grey one; input size."""
    return encode_image(segmenter.fuser.fuse(ir, vis))


def labels_png(segmenter: Segmenter, ir: np.ndarray, vis: np.ndarray) -> bytes:
    """PNG bytes of the MSRS class ids ``(H, W)``, one 8-bit grey level per pixel (0..8)."""
    labels, _ = segmenter.segment(ir, vis)
    return encode_image(labels / 255.0)


def analyze(segmenter: Segmenter, ir: np.ndarray, vis: np.ndarray) -> dict:
    """Everything the demo page shows, as a JSON-ready dict.

    Args:
        ir, vis: float32 ``(H, W)`` or ``(H, W, 3)`` in ``[0, 1]``, same size.

    Returns:
        ``width``, ``height``; ``fused``, ``overlay`` and ``labels`` as PNG data URLs (the
        fused image as :func:`fused_png` encodes it); ``classes``: id, name, palette colour and
        share of the pixels of each MSRS class; ``metrics``: :data:`SEED_METRICS` of the fused
        image against both inputs (``None`` where undefined); ``higher_is_better``; ``seconds``
        spent in the networks and in the metrics.

    Example:
        >>> result = analyze(Segmenter(), np.random.rand(64, 64), np.random.rand(64, 64, 3))
        >>> sorted(result["metrics"])
        ['EN', 'PSNR', 'Qabf', 'SD', 'SF', 'VIF']
    """
    began = time.perf_counter()
    labels, fused = segmenter.segment(ir, vis)
    networks = time.perf_counter() - began
    # The segmenter repeats a grey fused image into three channels; download it grey, as /api/fuse does.
    grey = bool((fused[..., 0] == fused[..., 1]).all() and (fused[..., 1] == fused[..., 2]).all())
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = compute_all(to_gray255(ir), to_gray255(vis), to_gray255(fused), metrics=SEED_METRICS)
    metrics_seconds = time.perf_counter() - began
    shares = np.bincount(labels.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES] / labels.size
    return {
        "width": int(labels.shape[1]),
        "height": int(labels.shape[0]),
        "fused": _data_url(encode_image(fused[..., 0] if grey else fused)),
        "overlay": _data_url(encode_image(overlay(fused, labels))),
        "labels": _data_url(encode_image(labels / 255.0)),
        "classes": [
            {"id": i, "name": name, "color": "#{:02x}{:02x}{:02x}".format(*PALETTE[i]), "share": float(shares[i])}
            for i, name in enumerate(CLASS_NAMES)
        ],
        "metrics": {name: (None if math.isnan(value) else float(value)) for name, value in scores.items()},
        "higher_is_better": {name: HIGHER_IS_BETTER[name] for name in SEED_METRICS},
        "seconds": {"networks": round(networks, 3), "metrics": round(metrics_seconds, 3)},
    }


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _bundled_examples() -> dict[str, dict[str, bytes]]:
    """``{name: {"ir": png, "vis": png}}`` from ``ivfuse/web/examples/<name>_{ir,vi}.png``."""
    folder = resources.files("ivfuse") / "web" / "examples"
    examples: dict[str, dict[str, bytes]] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        stem, _, kind = entry.name.removesuffix(".png").rpartition("_")
        if entry.name.endswith(".png") and kind in ("ir", "vi"):
            examples.setdefault(stem, {})["ir" if kind == "ir" else "vis"] = entry.read_bytes()
    return {name: pair for name, pair in examples.items() if len(pair) == 2}


def create_app(settings: ServerSettings | None = None, segmenter: Segmenter | None = None) -> FastAPI:
    """The FastAPI app of ``ivfuse serve``; loads the networks once, here.

    Args:
        settings: limits, concurrency and weights; default :class:`ServerSettings()`.
        segmenter: an already loaded :class:`Segmenter` to share (tests); default: load one
            from ``settings``.

    Raises:
        WeightsError: a weights file is missing, corrupt or of another network.

    Example:
        >>> from fastapi.testclient import TestClient
        >>> client = TestClient(create_app())
        >>> client.get("/api/health").json()["status"]
        'ok'
    """
    settings = settings or ServerSettings()
    segmenter = segmenter or Segmenter(settings.fusion_weights, settings.segmentation_weights, device=settings.device, backend=settings.backend)
    page = (resources.files("ivfuse") / "web" / "index.html").read_text(encoding="utf-8")
    examples = _bundled_examples()
    budget = _MemoryBudget(settings.upload_memory)
    workers = _Workers(settings.workers, settings.queue)
    app = FastAPI(title="ivfuse", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        headers = {"Retry-After": "1"} if error.status == 503 else None
        return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": f"{error.detail}: {request.method} {request.url.path}"}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(error).__name__}); see the server log"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        # The page carries all its script and style inline and loads nothing from elsewhere.
        policy = "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
        return HTMLResponse(page, headers={"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff"})

    @app.get("/api/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "version": __version__,
            "running": workers.running,
            "waiting": workers.waiting,
            "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels,
                       "workers": settings.workers, "queue": settings.queue},
        }

    @app.get("/api/examples")
    async def example_list() -> list[dict]:
        return [{"name": name, "ir": f"/api/examples/{name}/ir", "vis": f"/api/examples/{name}/vis"} for name in examples]

    @app.get("/api/examples/{name}/{kind}")
    async def example_image(name: str, kind: str) -> Response:
        if name not in examples or kind not in FIELDS:
            raise ApiError(404, f"no example {name!r}/{kind!r}; see /api/examples")
        return Response(examples[name][kind], media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def run(request: Request, compute: Callable[[Segmenter, np.ndarray, np.ndarray], object]):
        reader = _PairReader(settings, budget)
        try:
            ir, vis = await reader.read(request)
            check_pair(ir, vis, settings.max_pixels)
            async with workers.slot():
                def work():
                    return compute(segmenter, *decode_pair(ir, vis, settings.max_pixels))

                return await anyio.to_thread.run_sync(work)
        finally:
            reader.release()

    @app.post("/api/fuse")
    async def fuse(request: Request) -> Response:
        return Response(await run(request, fused_png), media_type="image/png")

    @app.post("/api/segment")
    async def segment(request: Request) -> Response:
        return Response(await run(request, labels_png), media_type="image/png")

    @app.post("/api/analyze")
    async def analyze_pair(request: Request) -> JSONResponse:
        return JSONResponse(await run(request, analyze))

    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one); ``OSError`` naming the address."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        raise OSError(f"{host}:{port}: cannot listen ({error.strerror or error})") from None
    return sock


def serve(settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000, *, announce: Callable[[str], None] = print) -> None:
    """Listen on ``host:port``, load the networks and answer until Ctrl+C or SIGTERM.

    ``announce`` gets one line with the address once the networks are loaded (with the real
    port when ``port`` is 0); connections made before wait in the socket's backlog.

    Raises:
        OSError: the address cannot be bound (message names it), checked before the slow load.
        WeightsError: unusable weights.
    """
    sock = listen(host, port)
    try:
        app = create_app(settings)
    except BaseException:
        sock.close()  # unusable weights: free the port at once, not when the process ends
        raise
    config = uvicorn.Config(app, log_level="info", limit_concurrency=settings.max_connections, timeout_keep_alive=5)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    announce(f"ivfuse serve: listening on http://{shown}:{bound_port}/ (Ctrl+C to stop)")
    uvicorn.Server(config).run(sockets=[sock])
