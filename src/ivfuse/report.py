"""Write an :class:`ivfuse.evaluate.Evaluation` as tables, bar charts and a figure grid.

Files written by :func:`write_report` into the report folder:

* ``per_image.csv``: one row per method and image, one column per metric.
* ``summary.md`` / ``summary.csv``: mean ± std per method and metric over the compared
  images, best value per metric in bold; the Markdown also lists skipped images.
* ``bars/<metric>.png``: one bar chart per metric.
* ``figure_grid.png``: rows = chosen images, columns = IR | visible | each method.

Example:
    >>> from ivfuse.report import write_report  # doctest: +SKIP
    >>> write_report(result, "report/", grid_images=3)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ivfuse.evaluate import Evaluation, summarize  # noqa: E402
from ivfuse.io import atomic_write, read_image, write_csv  # noqa: E402
from ivfuse.metrics.fusion import HIGHER_IS_BETTER  # noqa: E402

__all__ = [
    "best_methods",
    "choose_grid_images",
    "summary_markdown",
    "write_bar_charts",
    "write_figure_grid",
    "write_per_image_csv",
    "write_report",
    "write_summary_csv",
]


def _format_mean_std(mean: float, std: float) -> str:
    """``mean ± std`` with 4 decimals, or 2 for means of 10 and more (SD, PSNR)."""
    decimals = 2 if math.isfinite(mean) and abs(mean) >= 10 else 4
    return " ± ".join(f"{v:.{decimals}f}" if math.isfinite(v) else str(v) for v in (mean, std))


def best_methods(summary: dict) -> dict[str, set[str]]:
    """Methods with the best mean per metric (higher is better except for Nabf).

    Args:
        summary: output of :func:`ivfuse.evaluate.summarize`.

    Returns:
        ``{metric: {method, ...}}``; ties are all best; metrics with no finite mean are absent.

    Example:
        >>> best_methods({"a": {"EN": {"mean": 6.0}}, "b": {"EN": {"mean": 7.0}}})
        {'EN': {'b'}}
    """
    best = {}
    metrics = next(iter(summary.values())).keys() if summary else []
    for metric in metrics:
        means = {method: stats[metric]["mean"] for method, stats in summary.items() if not math.isnan(stats[metric]["mean"])}
        if means:
            target = max(means.values()) if HIGHER_IS_BETTER[metric] else min(means.values())
            best[metric] = {method for method, mean in means.items() if mean == target}
    return best


def summary_markdown(result: Evaluation, details: bool = True) -> str:
    """The summary as Markdown: a header, the mean ± std table and what was skipped.

    Args:
        result: an :class:`Evaluation`.
        details: also list skipped images, partially evaluated images and notes.

    Returns:
        Markdown text.

    Example:
        >>> print(summary_markdown(result))  # doctest: +SKIP
    """
    summary = summarize(result)
    best = best_methods(summary)
    arrows = {metric: "↑" if HIGHER_IS_BETTER[metric] else "↓" for metric in result.metrics}
    lines = [
        f"Convention: {result.convention}. Images: {result.selection}. Mean ± std (ddof 0) over "
        f"{len(result.compared)} image(s) evaluated for every method; best in bold.",
        "",
        "| Method | " + " | ".join(f"{metric} {arrows[metric]}" for metric in result.metrics) + " |",
        "|---|" + "---:|" * len(result.metrics),
    ]
    for method, stats in summary.items():
        cells = []
        for metric in result.metrics:
            cell = _format_mean_std(stats[metric]["mean"], stats[metric]["std"])
            if method in best.get(metric, ()):
                cell = f"**{cell}**"
            if stats[metric]["nan"]:
                cell += f" ({stats[metric]['nan']} NaN skipped)"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    missing = [method for method in result.methods if method not in summary]
    if missing:
        lines += ["", "No image could be evaluated for: " + ", ".join(missing) + "."]
    if not details:
        return "\n".join(lines) + "\n"
    if result.skipped:
        lines += ["", f"Skipped ({len(result.skipped)}):", ""]
        lines += [f"- {skip.image} [{'all methods' if skip.method == '*' else skip.method}]: {skip.reason}" for skip in result.skipped]
    not_compared = sorted({image for method in summary for image in result.scores[method]} - set(result.compared))
    if not_compared:
        lines += ["", f"Evaluated for some methods only, left out of the summary: {', '.join(not_compared)}."]
    if result.notes:
        lines += ["", f"Notes ({len(result.notes)}):", ""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def write_summary_csv(result: Evaluation, path: str | Path) -> None:
    """Write ``method,metric,mean,std,n,nan,best`` rows.

    Args:
        result: an :class:`Evaluation`.
        path: CSV file to write.

    Example:
        >>> write_summary_csv(result, "report/summary.csv")  # doctest: +SKIP
    """
    summary = summarize(result)
    best = best_methods(summary)
    rows = [["method", "metric", "mean", "std", "n", "nan", "best"]]
    for method, stats in summary.items():
        for metric in result.metrics:
            s = stats[metric]
            rows.append([method, metric, repr(s["mean"]), repr(s["std"]), s["n"], s["nan"], int(method in best.get(metric, ()))])
    write_csv(path, rows)


def write_per_image_csv(result: Evaluation, path: str | Path) -> None:
    """Write one row per method and evaluated image: ``method,image,in_summary,<metrics>``.

    Args:
        result: an :class:`Evaluation`.
        path: CSV file to write.

    Example:
        >>> write_per_image_csv(result, "report/per_image.csv")  # doctest: +SKIP
    """
    compared = set(result.compared)
    rows = [["method", "image", "in_summary", *result.metrics]]
    for method in result.evaluated_methods:
        for image, scores in sorted(result.scores[method].items()):
            rows.append([method, image, int(image in compared), *(repr(scores[m]) for m in result.metrics)])
    write_csv(path, rows)


def _save_figure(figure, path: str | Path, dpi: int) -> None:
    with atomic_write(path) as stream:
        figure.savefig(stream, format="png", dpi=dpi)
    plt.close(figure)


def write_bar_charts(result: Evaluation, folder: str | Path) -> list[Path]:
    """Write ``<metric>.png`` per metric: one bar per method, mean with a ±std error bar.

    Args:
        result: an :class:`Evaluation`.
        folder: output folder (created).

    Returns:
        The files written.

    Example:
        >>> write_bar_charts(result, "report/bars")  # doctest: +SKIP
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    methods = list(summary)
    written = []
    for metric in result.metrics:
        means = np.array([summary[m][metric]["mean"] for m in methods])
        stds = np.array([summary[m][metric]["std"] for m in methods])
        finite = np.isfinite(means)
        figure, axes = plt.subplots(figsize=(1.0 + 0.9 * len(methods), 3.2))
        axes.bar(np.arange(len(methods))[finite], means[finite], yerr=np.nan_to_num(stds[finite]), capsize=3, color="#4c72b0")
        axes.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right")
        direction = "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"
        axes.set_title(f"{metric} ({result.convention}, {direction}, n = {len(result.compared)})", fontsize=9)
        figure.tight_layout()
        path = folder / f"{metric}.png"
        _save_figure(figure, path, dpi=110)
        written.append(path)
    return written


def choose_grid_images(result: Evaluation, choice: int | Sequence[str]) -> list[str]:
    """Images for the figure grid: ``n`` evenly spread compared images, or given names.

    Args:
        result: an :class:`Evaluation`.
        choice: a count, or image names (stems) that must be among the compared images.

    Returns:
        Image names.

    Example:
        >>> choose_grid_images(result, 3)  # doctest: +SKIP
        ['00001D', '00500N', '01020N']
    """
    if isinstance(choice, int):
        if choice <= 0 or not result.compared:
            return []
        picks = np.linspace(0, len(result.compared) - 1, min(choice, len(result.compared))).round().astype(int)
        return [result.compared[i] for i in dict.fromkeys(picks.tolist())]
    unknown = [name for name in choice if name not in result.compared]
    if unknown:
        raise ValueError(f"grid image(s) not among the compared images: {', '.join(unknown)}")
    return list(choice)


def _show(axes, image: np.ndarray, inset: tuple[float, float, float, float] | None) -> None:
    axes.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    if inset is None:
        return
    height, width = image.shape[:2]
    x0, y0 = int(inset[0] * width), int(inset[1] * height)
    x1, y1 = max(x0 + 1, int((inset[0] + inset[2]) * width)), max(y0 + 1, int((inset[1] + inset[3]) * height))
    axes.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1))
    zoom = axes.inset_axes([0.6, 0.0, 0.4, 0.4])
    zoom.imshow(image[y0:y1, x0:x1], cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    zoom.set_xticks([])
    zoom.set_yticks([])
    for spine in zoom.spines.values():
        spine.set_edgecolor("red")


def write_figure_grid(
    result: Evaluation,
    path: str | Path,
    images: Sequence[str],
    inset: tuple[float, float, float, float] | None = None,
) -> Path | None:
    """Write a qualitative figure: rows = images, columns = IR | visible | each method.

    Args:
        result: an :class:`Evaluation`.
        path: PNG file to write.
        images: image names (see :func:`choose_grid_images`); nothing is written if empty.
        inset: optional zoom box ``(x, y, width, height)`` as fractions of the image,
            outlined in red and shown magnified in the lower-right corner of every cell.

    Returns:
        ``path``, or None when no image was given.

    Example:
        >>> write_figure_grid(result, "report/figure_grid.png", ["00001D"], inset=(0.4, 0.4, 0.2, 0.2))  # doctest: +SKIP
    """
    if not images:
        return None
    methods = result.evaluated_methods
    columns = ["IR", "visible", *methods]
    first_ir = read_image(result.sources[images[0]][0])
    aspect = first_ir.shape[0] / first_ir.shape[1]
    cell = 2.2
    figure, axes = plt.subplots(len(images), len(columns), figsize=(cell * len(columns), cell * aspect * len(images) + 0.3), squeeze=False)
    for row, image in enumerate(images):
        ir_path, vis_path = result.sources[image]
        cells = [read_image(ir_path), read_image(vis_path)] + [read_image(result.fused_paths[m][image]) for m in methods]
        for column, picture in enumerate(cells):
            _show(axes[row, column], picture, inset)
            if row == 0:
                axes[row, column].set_title(columns[column], fontsize=9)
        axes[row, 0].set_ylabel(image, fontsize=8)
    figure.tight_layout(pad=0.3)
    _save_figure(figure, path, dpi=120)
    return Path(path)


def write_report(
    result: Evaluation,
    folder: str | Path,
    grid_images: int | Sequence[str] = 3,
    inset: tuple[float, float, float, float] | None = None,
) -> dict[str, Path]:
    """Write every report file into ``folder`` (created).

    Args:
        result: an :class:`Evaluation`.
        folder: report folder.
        grid_images: count or names of the images in the figure grid (0: no grid).
        inset: optional zoom box for the figure grid, see :func:`write_figure_grid`.

    Returns:
        ``{"per_image", "summary_md", "summary_csv", "bars", "figure_grid"}`` -> paths
        (``figure_grid`` only when written).

    Example:
        >>> write_report(result, "report", grid_images=["00001D", "00004N"])  # doctest: +SKIP
    """
    folder = Path(folder)
    grid_choice = choose_grid_images(result, grid_images)  # bad names fail here, before any file is written
    written = {
        "per_image": folder / "per_image.csv",
        "summary_md": folder / "summary.md",
        "summary_csv": folder / "summary.csv",
        "bars": folder / "bars",
    }
    write_per_image_csv(result, written["per_image"])
    write_summary_csv(result, written["summary_csv"])
    write_bar_charts(result, written["bars"])
    grid = write_figure_grid(result, folder / "figure_grid.png", grid_choice, inset)
    if grid is not None:
        written["figure_grid"] = grid
    # Last, so that a report folder with a summary.md is a complete one, also after a killed run.
    with atomic_write(written["summary_md"]) as stream:
        stream.write(summary_markdown(result).encode("utf-8"))
    return written
