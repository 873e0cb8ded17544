"""The ``ivfuse`` command line: parses arguments, calls the library, reports. Nothing more.

Exit codes: 0 everything done; 1 partly done (some pairs failed or had no partner; the rest were
written); 2 nothing done (bad arguments, missing folders, unusable weights, unwritable output).
Every error is one ``error: ...`` line on stderr; ``ivfuse --debug ...`` adds the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

import click

from .io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, MAX_PIXELS_ENV, ImageReadError, first_line, pixel_limit
from .models.segmentation import DEFAULT_CLASS_GAINS, DEFAULT_FLIP, DEFAULT_SCALES, MIN_WINDOW
from .serialization import WeightsError

EXIT_PARTIAL, EXIT_FAILED = 1, 2
# OSError: e.g. a report or run folder that cannot be created; the message names the path.
_USER_ERRORS = (ImageReadError, WeightsError, ValueError, OSError)


def _fail(message: str) -> None:
    if _debug() and sys.exc_info()[0] is not None:
        traceback.print_exc()
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_FAILED)


def _debug() -> bool:
    context = click.get_current_context(silent=True)
    return bool(context and context.find_root().params.get("debug"))


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


class _OneLineErrors(click.Group):
    """Turns an exception no command expected into one ``error:`` line (exit 2) instead of a traceback."""

    def invoke(self, context: click.Context):
        try:
            return super().invoke(context)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            if context.params.get("debug"):
                raise
            _fail(f"unexpected {type(error).__name__}: {first_line(error)} (run 'ivfuse --debug ...' for the traceback)")


@click.group(cls=_OneLineErrors)
@click.option("--debug", is_flag=True, help="Show Python tracebacks of errors and warnings (for bug reports).")
@click.version_option(package_name="ivfuse")
def main(debug: bool) -> None:
    """Semantic-driven infrared-visible image fusion."""
    if debug:
        # Per-pair failures of a folder run are logged with their traceback at DEBUG level.
        handler = logging.StreamHandler(sys.stderr)
        logging.getLogger("ivfuse").addHandler(handler)
        logging.getLogger("ivfuse").setLevel(logging.DEBUG)
    else:
        warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"


def _set_max_pixels(context: click.Context, parameter: click.Parameter, value: int | None) -> int | None:
    # Through the environment, so ivfuse.io and the worker processes of 'eval --workers' all see it.
    if value is not None:
        os.environ[MAX_PIXELS_ENV] = str(value)
    else:
        try:
            pixel_limit()
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint=f"${MAX_PIXELS_ENV}") from None
    return value


_max_pixels_option = click.option(
    "--max-pixels", type=click.IntRange(min=1), metavar="N", expose_value=False, callback=_set_max_pixels,
    help=f"Refuse images with more pixels (from the file header, before decoding); default {DEFAULT_MAX_PIXELS:,} or ${MAX_PIXELS_ENV}.",
)


@main.command()
@click.option("--ir", "ir_path", required=True, type=click.Path(path_type=Path), help="Infrared image, or folder of them.")
@click.option("--vis", "vis_path", required=True, type=click.Path(path_type=Path), help="Visible image, or folder (names match the IR's stems).")
@click.option("-o", "--out", "out_path", required=True, type=click.Path(path_type=Path), help="Output file (single pair) or folder.")
@click.option("--method", default="cdiim", show_default=True, help="cdiim (the network) or a classical baseline: average, max, laplacian, dwt, gff.")
@click.option("--weights", type=click.Path(path_type=Path), help="Fusion weights (.safetensors, or .onnx from 'ivfuse export' with --backend onnxruntime); default: the shipped ones.")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True, help="Run the network in PyTorch or in ONNX Runtime (CPU; pip install 'ivfuse[onnx]').")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the network (default: PyTorch's choice).")
@click.option("--format", "extension", type=click.Choice([e.lstrip(".") for e in IMAGE_EXTENSIONS]), default="png", show_default=True, help="Output format for folders.")
@click.option("--bits", type=click.Choice(["8", "16"]), default="8", show_default=True, help="Output bit depth (16: PNG, or TIFF for grey).")
@click.option("--grey", is_flag=True, help="Write the fused luminance only, even for colour visible images.")
@click.option("--bit16", type=click.Choice(["full", "minmax"]), default="full", show_default=True, help="How 16-bit inputs map to [0,1]: x/65535, or per-image min-max.")
@click.option("--tile-size", type=int, default=1024, show_default=True, help="Larger images are fused in overlapping tiles of this size.")
@click.option("--skip-existing", is_flag=True, help="Skip pairs whose output already exists (resume an interrupted run).")
@_max_pixels_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fuse(ir_path, vis_path, out_path, method, weights, backend, device, threads, extension, bits, grey, bit16, tile_size, skip_existing, quiet):
    """Fuse an IR/visible pair, or every pair of two folders."""
    from .fuser import Fuser, fuse_folder, fuse_pair_files

    _set_threads(threads)
    try:
        folders = _inputs_are_folders(ir_path, vis_path)
        if folders and bits == "16" and extension not in ("png", "tif", "tiff"):
            raise ValueError(f"--bits 16 needs --format png (or tif for grey output), not {extension}")
        if folders and out_path.exists() and not out_path.is_dir():
            raise ValueError(f"{out_path}: exists and is not a folder; folder inputs need an output folder")
        fuser = Fuser(weights, device=device, method=method, tile_size=tile_size, backend=backend)
        if folders:
            report = fuse_folder(
                fuser, ir_path, vis_path, out_path, extension=f".{extension}", bits=int(bits), grey=grey,
                bit16=bit16, skip_existing=skip_existing, on_error=_warn, progress=_progress("fuse", quiet),
            )
            _finish_folder(report, "fused")
            return
        target = out_path / f"{ir_path.stem}.{extension}" if out_path.suffix.lower() not in IMAGE_EXTENSIONS else out_path
        if skip_existing and target.exists():
            click.echo(f"skipped {target} (exists)")
            return
        click.echo(f"wrote {fuse_pair_files(fuser, ir_path, vis_path, target, bits=int(bits), grey=grey, bit16=bit16)}")
    except _USER_ERRORS as error:
        _fail(str(error))


@main.command()
@click.option("--ir", "ir_path", required=True, type=click.Path(path_type=Path), help="Infrared image, or folder of them.")
@click.option("--vis", "vis_path", required=True, type=click.Path(path_type=Path), help="Visible image, or folder (names match the IR's stems).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder: labels/ (class-id PNGs), overlays/ and legend.png.")
@click.option("--fusion-weights", type=click.Path(path_type=Path), help="Fusion weights (.safetensors); default: the shipped ones.")
@click.option("--seg-weights", type=click.Path(path_type=Path), help="Segmentation weights (.safetensors); default: the shipped ones.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the networks (default: PyTorch's choice).")
@click.option("--probabilities", is_flag=True, help="Also write probabilities/<class>/<stem>.png: each class's probability as 8-bit grey.")
@click.option("--masks", is_flag=True, help="Also write masks/<class>/<stem>.png: 255 where the pixel is that class.")
@click.option("--flip/--no-flip", default=DEFAULT_FLIP, show_default=True,
              help="Average with the prediction of the mirrored image (test-time augmentation; twice the segmentation time).")
@click.option("--scales", default=",".join(f"{scale:g}" for scale in DEFAULT_SCALES), show_default=True, metavar="S,S,...", callback=lambda context, parameter, value: _parse_scales(value),
              help="Average the predictions of the image resized by these factors (test-time augmentation). Fastest: --no-flip --scales 1.")
@click.option("--window", default=0, show_default=True, type=click.IntRange(min=0),
              help=f"Segment in windows of N pixels overlapping by half (at least {MIN_WINDOW}; 0: whole images). GroupNorm networks need their training crop size, e.g. 192.")
@click.option("--class-gain", "class_gains", multiple=True, metavar="CLASS=GAIN", callback=lambda context, parameter, value: _parse_class_gains(value),
              help="Multiply a class's probability by GAIN before choosing each pixel's class (above 1: more of that class); "
                   "repeatable. Default: " + (", ".join(f"{name}={gain:g}" for name, gain in DEFAULT_CLASS_GAINS.items()) or "none (every class 1)") + ".")
@_max_pixels_option
@click.option("--skip-existing", is_flag=True, help="Skip pairs whose labels/<stem>.png exists (written last: the pair is complete); resumes an interrupted run.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def segment(ir_path, vis_path, out_dir, fusion_weights, seg_weights, device, threads, probabilities, masks, flip, scales, window, class_gains, skip_existing, quiet):
    """Segment fused images: MSRS class ids as PNG (labels/), palette overlays (overlays/) and their legend."""
    from .io import write_image
    from .segmenter import Segmenter, legend, segment_folder, segment_pair_files

    _set_threads(threads)
    try:
        folders = _inputs_are_folders(ir_path, vis_path)
        if 0 < window < MIN_WINDOW:
            raise click.BadParameter(f"expected 0 or at least {MIN_WINDOW}, got {window}", param_hint="--window")
        segmenter = Segmenter(fusion_weights, seg_weights, device=device, flip=flip, scales=scales, window=window or None,
                              class_gains=class_gains)
        if folders:
            report = segment_folder(segmenter, ir_path, vis_path, out_dir, probabilities=probabilities, masks=masks,
                                    skip_existing=skip_existing, on_error=_warn, progress=_progress("segment", quiet))
            _finish_folder(report, "segmented")
            return
        label = out_dir / "labels" / f"{ir_path.stem}.png"
        if skip_existing and label.exists():
            click.echo(f"skipped {label} (exists)")
            return
        write_image(out_dir / "legend.png", legend())
        click.echo(f"wrote {segment_pair_files(segmenter, ir_path, vis_path, out_dir, ir_path.stem, probabilities=probabilities, masks=masks)}")
    except _USER_ERRORS as error:
        _fail(str(error))


def _parse_class_gains(values: tuple[str, ...]) -> dict[str, float]:
    """``--class-gain`` values over the defaults; names and gains are checked by the Segmenter."""
    gains = dict(DEFAULT_CLASS_GAINS)
    for value in values:
        name, _, gain = value.rpartition("=")
        try:
            gains[name] = float(gain)
        except ValueError:
            raise click.BadParameter(f"expected CLASS=GAIN with a number, got {value!r}", param_hint="--class-gain") from None
    return gains


def _parse_scales(value: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(scale) for scale in value.split(","))
    except ValueError:
        scales = ()
    if not scales or not all(0 < scale <= 4 for scale in scales):
        raise click.BadParameter(f"expected comma-separated factors in (0, 4] such as 0.75,1,1.25, got {value!r}", param_hint="--scales")
    return scales


def _parse_fps(context, parameter, value: str | None):
    from fractions import Fraction

    if value is None:
        return None
    try:
        rate = Fraction(value)
    except (ValueError, ZeroDivisionError):
        rate = Fraction(0)
    if rate <= 0:
        raise click.BadParameter(f"expected a positive rate such as 25, 29.97 or 30000/1001, got {value!r}")
    return rate


@main.command("fuse-video")
@click.option("--ir", "ir_path", required=True, type=click.Path(path_type=Path), help="Infrared video file, or folder of frames (natural name order).")
@click.option("--vis", "vis_path", required=True, type=click.Path(path_type=Path), help="Visible video file, or folder of frames; paired with the IR by frame index.")
@click.option("-o", "--out", "out_path", required=True, type=click.Path(path_type=Path), help="Output video, H.264: .mp4, .mov or .mkv.")
@click.option("--weights", type=click.Path(path_type=Path), help="Fusion weights (.safetensors, or .onnx with --backend onnxruntime); default: the shipped ones.")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True, help="Run the networks in PyTorch or in ONNX Runtime (CPU; pip install 'ivfuse[onnx]').")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the network (default: PyTorch's choice).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Frame pairs fused per network call.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Fuse at most this many pairs (also accepts streams of different lengths).")
@click.option("--fps", callback=_parse_fps, metavar="RATE", help="Output frame rate (default: the inputs', 25 for two folders); also accepts inputs of different rates.")
@click.option("--side-by-side", is_flag=True, help="Write IR | visible | fused side by side.")
@click.option("--overlay", is_flag=True, help="Draw the segmentation (MSRS classes) over the fused frames.")
@click.option("--seg-weights", type=click.Path(path_type=Path), help="Segmentation weights for --overlay; default: the shipped ones.")
@click.option("--crf", type=click.IntRange(0, 51), default=18, show_default=True, help="H.264 quality: 0 lossless, 18 visually lossless, 23 x264's default.")
@click.option("--preset", default="veryfast", show_default=True, help="x264 speed: ultrafast ... veryfast ... medium ... veryslow (slower: smaller file).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fuse_video(ir_path, vis_path, out_path, weights, backend, device, threads, batch_size, max_frames, fps, side_by_side, overlay, seg_weights, crf, preset, quiet):
    """Fuse an IR and a visible video (or frame folders), frame by frame, into an H.264 video."""
    _set_threads(threads)
    try:
        from . import video
        from .fuser import Fuser
        from .segmenter import Segmenter

        if seg_weights is not None and not overlay:
            raise ValueError("--seg-weights is for the segmentation of --overlay; add --overlay or leave it out")
        video.require_av()
        model = Segmenter(weights, seg_weights, device=device, backend=backend) if overlay else Fuser(weights, device=device, backend=backend)
        progress = _progress("fuse-video", quiet, unit="frame")
        report = video.fuse_video(model, ir_path, vis_path, out_path, batch_size=batch_size, max_frames=max_frames, fps=fps,
                                  panels=side_by_side, crf=crf, preset=preset, on_warning=_warn, progress=progress)
    except _USER_ERRORS as error:
        _fail(str(error))
    click.echo(report.summary())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; 0.0.0.0 exposes the demo to every network this machine is on (docs/web.md).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one, printed at start).")
@click.option("--fusion-weights", type=click.Path(path_type=Path), help="Fusion weights (.safetensors); default: the shipped ones.")
@click.option("--seg-weights", type=click.Path(path_type=Path), help="Segmentation weights (.safetensors); default: the shipped ones.")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True, help="Run the networks in PyTorch or in ONNX Runtime (CPU; pip install 'ivfuse[onnx]').")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads per network run (default: PyTorch's choice).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Requests running the networks at the same time.")
@click.option("--queue", type=click.IntRange(min=0), default=16, show_default=True, help="Requests that may wait for a worker; more get 503 at once.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=25, show_default=True, help="Largest file per field, MB (MiB).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=40_000_000, show_default=True, help="Largest image, width x height, in pixels.")
@click.option("--upload-timeout", type=click.FloatRange(min=0, min_open=True), default=60, show_default=True, help="Seconds a client may take to send its request.")
def serve(host, port, fusion_weights, seg_weights, backend, device, threads, workers, queue, max_upload_mb, max_pixels, upload_timeout):
    """Web demo page and HTTP API (POST /api/fuse, /api/segment; GET /api/health): docs/web.md."""
    try:
        from . import server
    except ImportError as error:
        # ivfuse.server imports nothing third-party beyond the core dependencies but the extra and
        # what the extra pulls in (anyio, starlette, ...): any other missing module is the extra's.
        if error.name is None or error.name.split(".")[0] == "ivfuse":
            raise
        _fail(f'ivfuse serve needs the web server packages ({error.name} is not installed): pip install "ivfuse[serve]"')
    _set_threads(threads)
    if host in ("0.0.0.0", "::", ""):
        _warn(f"listening on every network interface ({host or 'all'}): anyone who can reach this machine can use the demo and the API, without a password")
    try:
        settings = server.ServerSettings(
            fusion_weights=fusion_weights, segmentation_weights=seg_weights, backend=backend, device=device, workers=workers, queue=queue,
            max_upload_bytes=int(max_upload_mb * server.MIB), max_pixels=max_pixels, upload_timeout=upload_timeout,
        )
        server.serve(settings, host, port, announce=click.echo)
    except _USER_ERRORS as error:
        _fail(str(error))


@main.command()
@click.option("-o", "--out", "out_path", required=True, type=click.Path(path_type=Path), help="ONNX file to write (*.onnx).")
@click.option("--seg", is_flag=True, help="Export the segmentation network instead of the fusion network.")
@click.option("--weights", type=click.Path(path_type=Path), help="Weights (.safetensors) of the exported network; default: the shipped ones.")
@click.option("--quantize", type=click.Choice(["int8"]), help="Static int8 quantisation of the fusion network (needs --calibration; cost: docs/onnx.md).")
@click.option("--calibration", type=click.Path(path_type=Path), help="With --quantize: folder with ir/ and vi/ training pairs (16 used) that set the int8 scales; never your test pairs.")
def export(out_path, seg, weights, quantize, calibration):
    """Export the fusion (or --seg segmentation) network to ONNX: dynamic batch, height and width."""
    try:
        from .onnx_backend import ONNX_OPSET, export_onnx
        from .serialization import load_network, shipped_weights

        if out_path.suffix.lower() != ".onnx":
            raise ValueError(f"{out_path}: name the ONNX file *.onnx (the onnxruntime backend tells models from weights by it)")
        name = "SegmentationNet" if seg else "FusionNet"
        network = load_network(weights or shipped_weights("segmentation" if seg else "fusion"), expected=name)
        model = export_onnx(network, out_path, quantize=quantize, calibration=calibration)
    except _USER_ERRORS as error:
        _fail(str(error))
    sizes = f", height and width multiples of {network.size_multiple}" if hasattr(network, "size_multiple") else ", height and width >= 32"
    click.echo(f"wrote {out_path} ({name}{', int8' if quantize else ''}, opset {ONNX_OPSET}, dynamic batch{sizes}, {len(model) / 1e6:.1f} MB)")


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _inputs_are_folders(ir_path: Path, vis_path: Path) -> bool:
    """True for two folders, False for two files; anything else is an error naming the path."""
    for path in (ir_path, vis_path):
        # A broken link or a link loop is left to read_image, which names the problem.
        if not path.exists() and not path.is_symlink():
            raise ImageReadError(f"{path}: no such file or folder")
    if ir_path.is_dir() != vis_path.is_dir():
        raise ImageReadError(f"{ir_path if vis_path.is_dir() else vis_path}: not a folder (--ir and --vis must both be files or both folders)")
    return ir_path.is_dir()


def _progress(verb: str, quiet: bool, unit: str = "pair"):
    if quiet:
        return None
    from tqdm import tqdm

    return lambda items, total=None: tqdm(items, total=total, desc=verb, unit=unit, file=sys.stderr)


def _finish_folder(report, verb: str) -> None:
    """Warn about what was not paired, print the summary, exit 1 (partial) or 2 (nothing) on failures."""
    for path in report.unmatched:
        _warn(f"{path}: no partner with the same name in the other folder (or its name is used twice)")
    for path in report.ignored:
        _warn(f"{path}: not an image file, skipped")
    click.echo(report.summary(verb))
    if not report.ok:
        sys.exit(EXIT_FAILED if not (report.written or report.skipped) else EXIT_PARTIAL)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="Run config (TOML), e.g. configs/semantic_v4.toml.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Run folder: logs, checkpoint, final weights.")
@click.option("--data-root", help="Folder the config's dataset paths are relative to (overrides [data].root).")
@click.option("--device", help="cpu, cuda or cuda:N (overrides [run].device).")
@click.option("--resume", is_flag=True, help="Continue from the run folder's last checkpoint.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change one config key for this run (TOML value), e.g. --set model.spatial=false; repeatable.")
def train(config_path, out_dir, data_root, device, resume, overrides):
    """Train the fusion (and segmentation) network from a config file; runs under torchrun too."""
    from . import train as training

    try:
        config = training.load_config(config_path, overrides)
        for path in training.train(config, out_dir, resume=resume, data_root=data_root, device=device):
            click.echo(f"wrote {path}")
    except _USER_ERRORS as error:
        _fail(str(error))


@main.command("seg-bench")
@click.option("--input", "inputs", required=True, multiple=True, nargs=3, type=(str, click.Path(path_type=Path), click.Path(path_type=Path)),
              metavar="NAME TRAIN_DIR TEST_DIR", help="An input kind: its name and folders of train and test images; repeat per kind.")
@click.option("--train-labels", required=True, type=click.Path(path_type=Path), help="Label PNGs of the train frames, e.g. MSRS/train/label.")
@click.option("--test-labels", required=True, type=click.Path(path_type=Path), help="Label PNGs of the test frames, e.g. MSRS/test/label.")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="Benchmark config (TOML), e.g. configs/segbench.toml.")
@click.option("--seeds", default="0,1,2", show_default=True, metavar="S,S,...", help="One training run per input kind and seed.")
@click.option("-o", "--out", "report_dir", required=True, type=click.Path(path_type=Path),
              help="Report folder to write; finished runs are kept in its runs/ and not trained again.")
@click.option("--device", help="cpu, cuda or cuda:N (overrides [run].device).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change one config key for this run (TOML value), e.g. --set model.spatial=false; repeatable.")
def seg_bench(inputs, train_labels, test_labels, config_path, seeds, report_dir, device, quiet, overrides):
    """Train the segmentation network from scratch on each input kind, test it, compare: mIoU, per-class IoU."""
    from . import segbench

    if not all(seed.strip().isdigit() for seed in seeds.split(",")):
        raise click.BadParameter(f"expected comma-separated integers >= 0, got {seeds!r}", param_hint="--seeds")
    seed_list = [int(seed) for seed in seeds.split(",")]
    try:
        config = segbench.load_config(config_path, overrides)
        kinds = [segbench.InputKind(name, train_dir, test_dir) for name, train_dir, test_dir in inputs]
        data = segbench.load_bench_data(kinds, train_labels, test_labels)
        for line in data.left_out:
            _warn(f"left out: {line}")
        results = segbench.run_bench(data, config, seed_list, device=device, progress=not quiet, results_dir=report_dir / "runs")
        written = segbench.write_report(results, data, report_dir)
    except _USER_ERRORS as error:
        _fail(str(error))
    click.echo(segbench.summary_markdown(results, data), nl=False)
    click.echo(f"report: {written['summary_md'].parent}", err=True)
    if data.left_out:
        sys.exit(EXIT_PARTIAL)


def _parse_fused(values: tuple[str, ...]) -> dict[str, str]:
    methods = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise click.BadParameter(f"expected NAME=DIR, got {value!r}", param_hint="--fused")
        if name in methods:
            raise click.BadParameter(f"method {name!r} given twice", param_hint="--fused")
        methods[name] = folder
    return methods


def _parse_every(value: str) -> int:
    step = value.removeprefix("every:")
    if not step.isdigit() or int(step) < 1:
        raise click.BadParameter(f"expected every:N with N >= 1, got {value!r}", param_hint="--images")
    return int(step)


def _parse_grid_images(value: str) -> int | list[str]:
    return int(value) if value.strip().isdigit() else [name.strip() for name in value.split(",") if name.strip()]


def _parse_inset(value: str | None) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        box = tuple(float(v) for v in value.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not all(0 <= v <= 1 for v in box):
        raise click.BadParameter("expected X,Y,W,H as fractions in 0..1", param_hint="--grid-zoom")
    return box


@main.command("seg-eval")
@click.option("--predicted", "predicted_dir", required=True, type=click.Path(path_type=Path), help="Folder of predicted class-id PNGs, e.g. the labels/ of ivfuse segment.")
@click.option("--labels", "label_dir", required=True, type=click.Path(path_type=Path), help="Folder of ground-truth class-id PNGs, e.g. MSRS/test/label.")
@click.option("-o", "--out", "out_path", type=click.Path(path_type=Path), help="Also write the table to this Markdown file.")
def seg_eval(predicted_dir, label_dir, out_path):
    """Score predicted segmentation labels against ground truth: mIoU and per-class IoU over all frames."""
    from .io import atomic_write
    from .segmentation_eval import score_label_folders, scores_markdown

    try:
        result = score_label_folders(predicted_dir, label_dir)
        table = scores_markdown(result)
        if out_path is not None:
            with atomic_write(out_path) as stream:
                stream.write(table.encode("utf-8"))
    except _USER_ERRORS as error:
        _fail(str(error))
    for message in result.failed:
        _warn(message)
    if result.missing:
        # One line, not one per frame: scoring a subset on purpose would otherwise flood the terminal.
        _warn(f"{label_dir}: {len(result.missing)} label file(s) without a prediction of the same name, left out "
              f"(first: {result.missing[0].name})")
    click.echo(table, nl=False)
    if result.failed or result.missing:
        sys.exit(EXIT_PARTIAL)


@main.command("eval")
@click.option("--ir", "ir_dir", required=True, type=click.Path(path_type=Path), help="Folder of infrared images.")
@click.option("--vis", "vis_dir", required=True, type=click.Path(path_type=Path), help="Folder of visible images.")
@click.option("--fused", "fused", required=True, multiple=True, metavar="NAME=DIR", help="A method's fused images; repeat per method.")
@click.option("-o", "--out", "report_dir", required=True, type=click.Path(path_type=Path), help="Report folder to write.")
@click.option("--convention", type=click.Choice(["canonical", "cddfuse", "tang"]), default="canonical", show_default=True, help="Metric convention (docs/metrics.md).")
@click.option("--metrics", default=None, metavar="EN,SD,...", help="Metrics to compute (default: all twelve).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes computing metrics.")
@click.option("--grid-images", default="3", show_default=True, metavar="N|NAME,...", help="Images in the figure grid: a count or names (0: none).")
@click.option("--grid-zoom", default=None, metavar="X,Y,W,H", help="Zoomed inset box in the figure grid, as fractions of the image.")
@click.option("--images", "subset", default=None, metavar="FILE|every:N",
              help="Evaluate a subset: the names listed in FILE (one stem or file name per line), or every N-th pair sorted by name, from the first.")
@_max_pixels_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_(ir_dir, vis_dir, fused, report_dir, convention, metrics, workers, grid_images, grid_zoom, subset, quiet):
    """Compare methods given as folders of fused images: write a report, print the summary."""
    from .evaluate import EvaluationError, evaluate, read_image_list
    from .report import summary_markdown, write_report

    methods = _parse_fused(fused)
    inset = _parse_inset(grid_zoom)
    images = _parse_every(subset) if subset and subset.startswith("every:") else None
    try:
        if subset and images is None:
            images = read_image_list(subset)
        result = evaluate(ir_dir, vis_dir, methods, metrics=metrics.split(",") if metrics else None,
                          convention=convention, workers=workers, progress=not quiet, images=images)
        written = write_report(result, report_dir, grid_images=_parse_grid_images(grid_images), inset=inset)
    except (EvaluationError, *_USER_ERRORS) as error:
        _fail(str(error))
    for skip in result.skipped:
        _warn(f"skipped {skip.image} [{'all methods' if skip.method == '*' else skip.method}]: {skip.reason}")
    click.echo(summary_markdown(result, details=False), nl=False)
    click.echo(f"report: {written['summary_md'].parent}", err=True)
    if result.skipped:
        sys.exit(EXIT_PARTIAL)
