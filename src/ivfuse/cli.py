"""The ``ivfuse`` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import click

from ivfuse.metrics.fusion import CONVENTIONS


@click.group()
def main():
    """Infrared-visible image fusion: fuse images, evaluate fusion results."""


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


def _parse_grid(value: str) -> int | list[str]:
    return int(value) if value.strip().isdigit() else [name.strip() for name in value.split(",") if name.strip()]


def _parse_inset(value: str | None):
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
@click.option("--ir", "ir_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of infrared images.")
@click.option("--vis", "vis_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of visible images.")
@click.option("--fused", "fused", required=True, multiple=True, metavar="NAME=DIR", help="A method's fused images; repeat per method.")
@click.option("-o", "--output", "report_dir", required=True, type=click.Path(file_okay=False), help="Report folder to write.")
@click.option("--convention", type=click.Choice(CONVENTIONS), default="canonical", show_default=True, help="Metric convention (docs/metrics.md).")
@click.option("--metrics", default=None, metavar="EN,SD,...", help="Metrics to compute (default: all).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes computing metrics.")
@click.option("--grid-images", default="3", show_default=True, metavar="N|NAME,...", help="Images in the figure grid: a count or names (0: none).")
@click.option("--grid-zoom", default=None, metavar="X,Y,W,H", help="Zoomed inset box in the figure grid, as fractions of the image.")
def eval_command(ir_dir, vis_dir, fused, report_dir, convention, metrics, workers, grid_images, grid_zoom):
    """Compare methods given as folders of fused images; write a report and print the summary."""
    from ivfuse.evaluate import EvaluationError, evaluate
    from ivfuse.report import summary_markdown, write_report

    methods = _parse_fused(fused)
    inset = _parse_inset(grid_zoom)
    metric_names = metrics.split(",") if metrics else None
    try:
        result = evaluate(ir_dir, vis_dir, methods, metrics=metric_names, convention=convention, workers=workers)
        written = write_report(result, report_dir, grid_images=_parse_grid(grid_images), inset=inset)
    except (EvaluationError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    for skip in result.skipped:
        click.echo(f"warning: skipped {skip.image} [{'all methods' if skip.method == '*' else skip.method}]: {skip.reason}", err=True)
    click.echo(summary_markdown(result, details=False), nl=False)
    click.echo(f"\nReport written to {written['summary_md'].parent}", err=True)
