"""The ``ivfuse`` command line: parses arguments, calls the library, reports. Nothing more.

Exit codes: 0 everything done; 1 partly done (some pairs failed or had no partner; the rest were
written); 2 nothing done (bad arguments, missing folders, unusable weights, unwritable output).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .io import IMAGE_EXTENSIONS, ImageReadError
from .serialization import WeightsError

EXIT_PARTIAL, EXIT_FAILED = 1, 2
# OSError: e.g. a report or run folder that cannot be created; the message names the path.
_USER_ERRORS = (ImageReadError, WeightsError, ValueError, OSError)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_FAILED)


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@click.group()
@click.version_option(package_name="ivfuse")
def main() -> None:
    """Semantic-driven infrared-visible image fusion."""


@main.command()
@click.option("--ir", "ir_path", required=True, type=click.Path(path_type=Path), help="Infrared image, or folder of them.")
@click.option("--vis", "vis_path", required=True, type=click.Path(path_type=Path), help="Visible image, or folder (names match the IR's stems).")
@click.option("-o", "--out", "out_path", required=True, type=click.Path(path_type=Path), help="Output file (single pair) or folder.")
@click.option("--method", default="cdiim", show_default=True, help="cdiim (the network) or a classical baseline: average, max, laplacian, dwt, gff.")
@click.option("--weights", type=click.Path(path_type=Path), help="Fusion weights (.safetensors); default: the shipped ones.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the network (default: PyTorch's choice).")
@click.option("--format", "extension", type=click.Choice([e.lstrip(".") for e in IMAGE_EXTENSIONS]), default="png", show_default=True, help="Output format for folders.")
@click.option("--bits", type=click.Choice(["8", "16"]), default="8", show_default=True, help="Output bit depth (16: PNG, or TIFF for grey).")
@click.option("--grey", is_flag=True, help="Write the fused luminance only, even for colour visible images.")
@click.option("--bit16", type=click.Choice(["full", "minmax"]), default="full", show_default=True, help="How 16-bit inputs map to [0,1]: x/65535, or per-image min-max.")
@click.option("--tile-size", type=int, default=1024, show_default=True, help="Larger images are fused in overlapping tiles of this size.")
@click.option("--skip-existing", is_flag=True, help="Skip pairs whose output already exists (resume an interrupted run).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fuse(ir_path, vis_path, out_path, method, weights, device, threads, extension, bits, grey, bit16, tile_size, skip_existing, quiet):
    """Fuse an IR/visible pair, or every pair of two folders."""
    from .fuser import Fuser, fuse_folder, fuse_pair_files

    _set_threads(threads)
    try:
        folders = _inputs_are_folders(ir_path, vis_path)
        if folders and bits == "16" and extension not in ("png", "tif", "tiff"):
            raise ValueError(f"--bits 16 needs --format png (or tif for grey output), not {extension}")
        fuser = Fuser(weights, device=device, method=method, tile_size=tile_size)
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
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder: labels/ (class-id PNGs) and overlays/.")
@click.option("--fusion-weights", type=click.Path(path_type=Path), help="Fusion weights (.safetensors); default: the shipped ones.")
@click.option("--seg-weights", type=click.Path(path_type=Path), help="Segmentation weights (.safetensors); default: the shipped ones.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the networks (default: PyTorch's choice).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def segment(ir_path, vis_path, out_dir, fusion_weights, seg_weights, device, threads, quiet):
    """Segment fused images: MSRS class ids as PNG (labels/) and palette overlays (overlays/)."""
    from .fuser import process_folder
    from .segmenter import Segmenter, segment_pair_files

    _set_threads(threads)
    try:
        folders = _inputs_are_folders(ir_path, vis_path)
        segmenter = Segmenter(fusion_weights, seg_weights, device=device)

        def segment_one(stem: str, ir_file: Path, vis_file: Path) -> Path:
            return segment_pair_files(segmenter, ir_file, vis_file, out_dir, stem)

        if folders:
            report = process_folder(ir_path, vis_path, segment_one, on_error=_warn, progress=_progress("segment", quiet))
            _finish_folder(report, "segmented")
            return
        click.echo(f"wrote {segment_one(ir_path.stem, ir_path, vis_path)}")
    except _USER_ERRORS as error:
        _fail(str(error))


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _inputs_are_folders(ir_path: Path, vis_path: Path) -> bool:
    """True for two folders, False for two files; anything else is an error naming the path."""
    for path in (ir_path, vis_path):
        if not path.exists():
            raise ImageReadError(f"{path}: no such file or folder")
    if ir_path.is_dir() != vis_path.is_dir():
        raise ImageReadError(f"{ir_path if vis_path.is_dir() else vis_path}: not a folder (--ir and --vis must both be files or both folders)")
    return ir_path.is_dir()


def _progress(verb: str, quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    return lambda pairs: tqdm(pairs, desc=verb, unit="pair", file=sys.stderr)


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
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="Run config (TOML), e.g. configs/semantic.toml.")
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
