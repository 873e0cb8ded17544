"""Evaluate folders of fused images against their infrared/visible sources.

This is the library behind ``ivfuse eval``: it pairs the IR and visible folders by file
stem, finds each method's fused image of every pair, computes the fusion metrics (in a
process pool with ``workers > 1``) and returns an :class:`Evaluation` that
:mod:`ivfuse.report` writes out. Bad files never stop the run: a missing, unreadable or
wrongly sized image skips that image for that method, with the reason recorded.

Example:
    >>> from ivfuse.evaluate import evaluate  # doctest: +SKIP
    >>> result = evaluate("MSRS/test/ir", "MSRS/test/vi", {"average": "out/average"})  # doctest: +SKIP
    >>> result.compared[:2]  # doctest: +SKIP
    ['00004N', '00005N']
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ivfuse.io import IMAGE_EXTENSIONS, ImageReadError, find_pairs, list_images, read_image
from ivfuse.metrics.fusion import CONVENTIONS, compute_all, resolve_metric_names, to_gray255

__all__ = ["Evaluation", "EvaluationError", "Skip", "evaluate", "image_stems", "read_image_list", "summarize"]


class EvaluationError(ValueError):
    """Nothing can be evaluated (missing folder, no pairs, no readable image)."""


@dataclass(frozen=True)
class Skip:
    """An image left out for one method (``method = "*"``: for all methods)."""

    method: str
    image: str
    reason: str


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes:
        methods: method names in the order given.
        metrics: metric names computed.
        convention: the metric convention used.
        scores: ``scores[method][image][metric]`` for every image evaluated for a method.
        compared: images evaluated for every method that has any result; summaries are
            computed over these only, so that methods are compared on the same images.
        skipped: images left out, with reasons.
        notes: per-image warnings that did not skip the image (e.g. an undefined metric).
        sources: ``image -> (ir_path, vis_path)`` of every pair evaluated.
        fused_paths: ``fused_paths[method][image]`` of every fused image evaluated.
        selection: which pairs were evaluated, in words (see ``images`` of :func:`evaluate`).
    """

    methods: list[str]
    metrics: list[str]
    convention: str
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    compared: list[str] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    fused_paths: dict[str, dict[str, Path]] = field(default_factory=dict)
    selection: str = "all pairs"

    @property
    def evaluated_methods(self) -> list[str]:
        """Methods with at least one evaluated image."""
        return [m for m in self.methods if self.scores.get(m)]


def _require_folder(path: str | Path, what: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise EvaluationError(f"{what} folder not found: {folder}")
    return folder


def _evaluate_one_pair(image, ir_path, vis_path, fused_by_method, metrics, convention):
    """Worker: metrics of one source pair against every method's fused image.

    Returns ``(image, {method: scores}, [Skip], [note])``; never raises for bad files.
    """
    try:
        ir, vis = to_gray255(read_image(ir_path)), to_gray255(read_image(vis_path))
    except ImageReadError as error:
        return image, {}, [Skip("*", image, str(error))], []
    if ir.shape != vis.shape:
        reason = f"IR {ir_path.name} is {ir.shape[1]}x{ir.shape[0]} but visible is {vis.shape[1]}x{vis.shape[0]}"
        return image, {}, [Skip("*", image, reason)], []
    scores, skips, notes = {}, [], []
    for method, fused_path in fused_by_method.items():
        if fused_path is None:
            skips.append(Skip(method, image, "no fused image"))
            continue
        try:
            fused = to_gray255(read_image(fused_path))
        except ImageReadError as error:
            skips.append(Skip(method, image, str(error)))
            continue
        if fused.shape != ir.shape:
            reason = f"{fused_path} is {fused.shape[1]}x{fused.shape[0]}, sources are {ir.shape[1]}x{ir.shape[0]}"
            skips.append(Skip(method, image, reason))
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores[method] = compute_all(ir, vis, fused, metrics=metrics, convention=convention)
        notes.extend(f"{method}/{image}: {w.message}" for w in caught)
    return image, scores, skips, notes


def evaluate(
    ir_dir: str | Path,
    vis_dir: str | Path,
    fused_dirs: Mapping[str, str | Path],
    metrics: Iterable[str] | None = None,
    convention: str = "canonical",
    workers: int = 1,
    progress: bool = True,
    images: int | Sequence[str] | None = None,
) -> Evaluation:
    """Compute fusion metrics for folders of fused images.

    Images are matched by file stem across extensions (``00001D.png`` in ``ir_dir`` and
    ``vis_dir``, ``00001D.jpg`` in a method folder). Sources are read with
    :func:`ivfuse.io.read_image` and converted with :func:`ivfuse.metrics.to_gray255`
    (colour -> BT.601 luma; 16-bit files are rescaled to 0..255).

    Args:
        ir_dir, vis_dir: folders of infrared and visible images.
        fused_dirs: ``{method name: folder of fused images}``.
        metrics: metric names (case-insensitive); default all.
        convention: "canonical", "cddfuse" or "tang".
        workers: processes; 1 computes in this process.
        progress: show a progress bar (tqdm, on stderr).
        images: evaluate a subset of the pairs: ``N`` (an int) takes every N-th pair of the
            pairs sorted by name, starting with the first (positions 1, 1 + N, 1 + 2N, ...);
            a list takes the pairs of these names (stems, or file names with an image
            extension). Listed names without a pair are skipped and reported; unpaired files
            are reported only when listed. Default: every pair.

    Returns:
        An :class:`Evaluation`; check ``compared``, ``skipped`` and ``selection``.

    Raises:
        EvaluationError: a folder is missing, no IR/visible pair matches (or none of the listed
            names), ``N < 1``, or no image could be evaluated for any method.

    Example:
        >>> result = evaluate("ir", "vi", {"gff": "fused/gff"}, metrics=["EN", "Qabf"])  # doctest: +SKIP
        >>> result.scores["gff"]["00001D"]["EN"]  # doctest: +SKIP
        6.61
    """
    if convention not in CONVENTIONS:
        raise EvaluationError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    if not fused_dirs:
        raise EvaluationError("no fused folder given")
    metric_names = resolve_metric_names(metrics)
    ir_folder = _require_folder(ir_dir, "IR")
    vis_folder = _require_folder(vis_dir, "visible")
    listing = find_pairs(ir_folder, vis_folder)
    if not listing.pairs:
        raise EvaluationError(f"no IR/visible pair with matching names in {ir_folder} and {vis_folder}")
    pairs, selection, listed = _select_pairs(listing.pairs, images)
    result = Evaluation(methods=list(fused_dirs), metrics=metric_names, convention=convention, selection=selection)
    unpaired = [
        *(Skip("*", path.stem, f"no visible image for {path}") for path in listing.only_ir),
        *(Skip("*", path.stem, f"no IR image for {path}") for path in listing.only_vis),
        *(Skip("*", path.stem, f"{path}: another file has the same name stem") for path in listing.ambiguous),
    ]
    result.skipped += [skip for skip in unpaired if listed is None or skip.image in listed]
    found = {skip.image for skip in result.skipped} | {image for image, _, _ in pairs}
    result.skipped += [Skip("*", name, "listed, but no IR or visible image of this name") for name in listed or () if name not in found]
    result.notes += [f"{path}: not an image file, ignored" for path in listing.not_images]
    result.sources = {image: (ir_path, vis_path) for image, ir_path, vis_path in pairs}
    method_images = {}
    for method, folder in fused_dirs.items():
        fused_images, not_images, ambiguous = list_images(_require_folder(folder, f"fused ({method})"))
        ambiguous_stems = {path.stem for path in ambiguous}
        method_images[method] = {image: path for image, path in fused_images.items() if image not in ambiguous_stems}
        result.skipped += [Skip(method, path.stem, f"{path}: another file has the same name stem") for path in ambiguous]
        result.notes += [f"{path}: not an image file, ignored" for path in not_images]
        stray = sorted(fused_images.keys() - {image for image, _, _ in listing.pairs})
        if stray:
            result.notes.append(f"{method}: {len(stray)} fused image(s) without a source pair ignored, e.g. {fused_images[stray[0]]}")

    tasks = [
        (image, ir_path, vis_path, {m: method_images[m].get(image) for m in result.methods}, metric_names, convention)
        for image, ir_path, vis_path in pairs
    ]
    bar = tqdm(total=len(tasks), desc="evaluating", unit="image", disable=not progress)
    outcomes = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_evaluate_one_pair, *task) for task in tasks]
            for future in as_completed(futures):
                outcomes.append(future.result())
                bar.update()
    else:
        for task in tasks:
            outcomes.append(_evaluate_one_pair(*task))
            bar.update()
    bar.close()

    for image, scores, skips, notes in sorted(outcomes, key=lambda outcome: outcome[0]):
        for method, values in scores.items():
            result.scores.setdefault(method, {})[image] = values
            result.fused_paths.setdefault(method, {})[image] = method_images[method][image]
        result.skipped += skips
        result.notes += notes
    evaluated = result.evaluated_methods
    if not evaluated:
        raise EvaluationError("nothing could be evaluated: " + "; ".join(f"{s.image}: {s.reason}" for s in result.skipped[:3]))
    common = set.intersection(*(set(result.scores[m]) for m in evaluated))
    result.compared = sorted(common)
    return result


def _select_pairs(pairs: list, images: int | Sequence[str] | None) -> tuple[list, str, set[str] | None]:
    """The pairs ``images`` asks for (see :func:`evaluate`): ``(pairs, selection in words, listed names or None)``."""
    if images is None:
        return pairs, f"all {len(pairs)} pairs", None
    if isinstance(images, int):
        if images < 1:
            raise EvaluationError(f"every N-th pair needs N >= 1, got {images}")
        chosen = pairs[::images]
        return chosen, f"{len(chosen)} pairs at positions 1, {1 + images}, {1 + 2 * images}, ... of the {len(pairs)} pairs sorted by name", None
    listed = image_stems(images)
    chosen = [pair for pair in pairs if pair[0] in listed]
    if not chosen:
        raise EvaluationError(f"none of the {len(listed)} listed names has an IR/visible pair")
    return chosen, f"the {len(chosen)} pairs of {len(listed)} listed names", listed


def read_image_list(path: str | Path) -> list[str]:
    """Names from a text file: one stem or file name per line; blank lines and ``#`` comments skipped.

    Raises:
        EvaluationError: the file cannot be read, or lists no name.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise EvaluationError(f"{path}: cannot read image list ({error})") from None
    names = [line.split("#", 1)[0].strip() for line in lines]
    names = [name for name in names if name]
    if not names:
        raise EvaluationError(f"{path}: the image list names no image")
    return names


def image_stems(names: Iterable[str]) -> set[str]:
    """The pair names (file stems) that listed names refer to: ``"00055D.png"`` and ``"00055D"``
    both name the pair ``00055D``; a name whose suffix is not an image extension is kept whole.

    Example:
        >>> sorted(image_stems(["00055D.png", "FLIR_00018", "a.b"]))
        ['00055D', 'FLIR_00018', 'a.b']
    """
    return {Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name for name in names}


def summarize(result: Evaluation) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and standard deviation of each metric over the compared images.

    NaN values (undefined metrics) are left out of the mean and counted.

    Args:
        result: an :class:`Evaluation`.

    Returns:
        ``summary[method][metric] = {"mean", "std", "n", "nan"}`` (std with ddof = 0),
        for the methods with results.

    Example:
        >>> summarize(result)["gff"]["EN"]["mean"]  # doctest: +SKIP
        6.61
    """
    summary = {}
    for method in result.evaluated_methods:
        summary[method] = {}
        for metric in result.metrics:
            values = np.array([result.scores[method][image][metric] for image in result.compared], dtype=np.float64)
            defined = values[~np.isnan(values)]
            summary[method][metric] = {
                "mean": float(defined.mean()) if defined.size else math.nan,
                "std": float(defined.std()) if defined.size else math.nan,
                "n": int(defined.size),
                "nan": int(values.size - defined.size),
            }
    return summary
