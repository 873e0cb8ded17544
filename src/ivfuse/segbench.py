"""The segmentation benchmark: how well does each kind of input image support segmentation?

The protocol fusion papers use to compare input kinds: for each kind (IR only, visible only, each
fusion method's fused images), train the same :class:`~ivfuse.models.SegmentationNet` from
scratch with the same budget on the labelled training frames, score it on the labelled test
frames, and repeat for several seeds (one seed is not enough to tell methods apart: persons are
learned or not depending on the seed). This is the library behind ``ivfuse seg-bench``.

* **Same frames for every kind.** A frame takes part when it has a label and a readable image of
  the right size in every kind's folder; any other labelled frame is left out for all kinds (and
  reported), so kinds are compared on identical frames. Images without a label are ignored.
* **Same training for every kind.** The training step is the segmentation phase's of
  ``ivfuse train`` (:func:`ivfuse.train.segmentation_loss`: OHEM cross-entropy, auxiliary head),
  with the same augmentation (:func:`ivfuse.data.draw_crops`) and learning-rate schedule
  (:func:`ivfuse.train.learning_rate`). For one seed, every kind starts from the same initial
  weights and sees the same crops at every step: only the pixels differ.
* **Scores over the whole test set**: one confusion matrix summed over all test frames (whole
  images, no cropping), then IoU per class, mIoU over the 9 classes including "unlabelled" (the
  field's convention), mIoU over classes 1-8 and pixel accuracy
  (:func:`ivfuse.metrics.segmentation.segmentation_scores`); mean ± std (ddof 1) over seeds.

All frames of all kinds are held in memory as ``uint8`` RGB: about 0.9 MB per 640x480 frame and
kind (199 MSRS labelled frames x 5 kinds: ~0.9 GB).

Example:
    >>> config = load_config("configs/segbench.toml")  # doctest: +SKIP
    >>> data = load_bench_data([InputKind("ir", "MSRS/train/ir", "MSRS/test/ir")],
    ...                        "MSRS/train/label", "MSRS/test/label")  # doctest: +SKIP
    >>> results = run_bench(data, config, seeds=[0, 1, 2])  # doctest: +SKIP
    >>> write_report(results, data, "report/segbench")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .classes import IOU_COLUMNS, NUM_CLASSES
from .data import Augment, LabelledImage, draw_crops, load_labelled_image
from .io import ImageReadError, LabelSizeError, atomic_write, list_images, read_label, write_csv
from .losses import SemanticLossConfig
from .metrics.segmentation import confusion_matrix, segmentation_scores
from .models import SegmentationConfig, SegmentationNet, class_probabilities
from .runtime import prepare_training_threads, resolve_device
from .serialization import save_network
from .train import (
    OptimConfig,
    average_decay,
    learning_rate,
    make_optimizer,
    mixed_precision,
    optimizer_step,
    read_config,
    segmentation_loss,
    update_average,
)

#: Scores reported per input kind besides the per-class IoUs: key of ``segmentation_scores`` -> table heading.
SCORES = {
    "miou": "mIoU 0-8",
    "miou_without_0": "mIoU 1-8",
    "pixel_accuracy": "pixel acc.",
}


@dataclass(frozen=True)
class BenchSettings:
    """Budget and execution of every training run; ``device`` is ``cpu``, ``cuda`` or ``cuda:N``.

    ``amp``: bfloat16 autocast on CUDA; ignored on the CPU.
    """

    steps: int = 1000
    batch_size: int = 8
    threads: int = 1
    device: str = "cpu"
    amp: bool = True


@dataclass(frozen=True)
class BenchConfig:
    """Everything a benchmark run depends on besides its inputs and seeds; one TOML file."""

    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    augment: Augment = field(default_factory=Augment)
    semantic_loss: SemanticLossConfig = field(default_factory=SemanticLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: BenchSettings = field(default_factory=BenchSettings)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> BenchConfig:
    """Read a TOML benchmark config (sections as :class:`BenchConfig`); unknown keys are errors.

    ``overrides``: ``"section.key=value"`` strings applied on top (:func:`ivfuse.train.read_config`).

    Example:
        >>> load_config("configs/segbench.toml", ["run.steps=500"]).run.steps
        500
    """
    return read_config(path, BenchConfig, overrides)


@dataclass(frozen=True)
class InputKind:
    """One kind of input image: a name for the report and its folders of train and test frames."""

    name: str
    train_dir: Path
    test_dir: Path


@dataclass
class BenchData:
    """The frames of every input kind, loaded by :func:`load_bench_data`.

    Attributes:
        train, test: ``{kind name: frames}``; every kind has the same frames in the same order.
        left_out: one line per labelled frame or file left out, naming it and why.
    """

    train: dict[str, list[LabelledImage]]
    test: dict[str, list[LabelledImage]]
    left_out: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return list(self.train)


def load_bench_data(
    inputs: Sequence[InputKind], train_labels: str | os.PathLike, test_labels: str | os.PathLike
) -> BenchData:
    """Load the labelled frames of every input kind, for training and for testing.

    Images are matched to labels by file stem (extensions may differ); images without a label
    are ignored. See the module docstring for which frames take part.

    Args:
        inputs: the input kinds (names must differ).
        train_labels, test_labels: folders of label PNGs (class ids, e.g. ``MSRS/train/label``).

    Returns:
        A :class:`BenchData`.

    Raises:
        ImageReadError: a folder is missing, or no labelled frame is left in a split.
        LabelSizeError: an image's size differs from its label's (wrong folder, not a bad file).
        ValueError: no input kind, or a name given twice.
    """
    if not inputs:
        raise ValueError("no input kind given")
    names = [kind.name for kind in inputs]
    if len(set(names)) < len(names):
        raise ValueError(f"input kind names must differ: {', '.join(names)}")
    data = BenchData(train={}, test={})
    for split, label_dir in (("train", train_labels), ("test", test_labels)):
        folders = {kind.name: Path(getattr(kind, f"{split}_dir")) for kind in inputs}
        frames = _load_split(folders, Path(label_dir), data.left_out)
        for name in names:
            getattr(data, split)[name] = frames[name]
    return data


def _load_split(folders: dict[str, Path], label_dir: Path, left_out: list[str]) -> dict[str, list[LabelledImage]]:
    """The labelled frames of one split that every kind has; appends what is left out to ``left_out``."""
    label_files, _, ambiguous = list_images(label_dir)
    left_out += [f"{path}: another label has the same name stem" for path in ambiguous]
    listings = {}
    for name, folder in folders.items():
        images = list_images(folder)[0]  # a stem used by two files is in neither: reported as missing
        listings[name] = images
        if not images.keys() & label_files.keys():
            raise ImageReadError(f"{folder}: no image has a label in {label_dir}")
    frames = {name: [] for name in folders}
    for stem, label_path in sorted(label_files.items()):
        missing = [name for name, images in listings.items() if stem not in images]
        if missing:
            left_out.append(f"{label_path}: no image {stem} (or more than one) in {', '.join(str(folders[name]) for name in missing)}")
            continue
        try:
            label = torch.from_numpy(read_label(label_path))
            loaded = {name: load_labelled_image(stem, listings[name][stem], label) for name in folders}
        except LabelSizeError:
            raise
        except ImageReadError as error:
            left_out.append(str(error))
            continue
        for name, frame in loaded.items():
            frames[name].append(frame)
    if not next(iter(frames.values())):
        raise ImageReadError(f"{label_dir}: no labelled frame is readable in every input folder")
    return frames


@dataclass
class SeedResult:
    """One training run: an input kind, a seed, the test confusion matrix and its scores.

    Attributes:
        scores: :func:`~ivfuse.metrics.segmentation.segmentation_scores` of ``confusion``.
        confusion: ``(9, 9)`` int64, summed over every test frame.
        seconds: wall time of training and testing.
    """

    kind: str
    seed: int
    confusion: np.ndarray
    scores: dict
    seconds: float


def train_segmentation(
    frames: Sequence[LabelledImage],
    config: BenchConfig,
    seed: int,
    device: torch.device,
    on_step: Callable[[float], None] | None = None,
) -> SegmentationNet:
    """Train a :class:`SegmentationNet` from scratch on ``frames``: ``config.run.steps`` steps.

    The initial weights depend on ``seed`` alone, and the batch of each step on ``(seed, step)``
    alone (:func:`~ivfuse.data.draw_crops`), so runs repeat bitwise on the CPU with the same
    thread count.

    Args:
        frames: training frames.
        config: network, augmentation, loss, optimiser, budget.
        seed: seeds the initial weights and the batches.
        device: where to train.
        on_step: called with the loss after every step (progress display).

    Returns:
        The trained network, in eval mode; with ``[optim] ema_decay``, the moving average of
        its weights (:func:`ivfuse.train.update_average`).
    """
    run = config.run
    torch.manual_seed(seed)
    network = SegmentationNet(config.segmentation).to(device).train()
    average = copy.deepcopy(network).requires_grad_(False) if config.optim.ema_decay else None
    optimizer = make_optimizer(network, config.optim)
    autocast = mixed_precision(device, run.amp)
    for step in range(run.steps):
        image, label = (tensor.to(device) for tensor in draw_crops(frames, run.batch_size, config.augment, seed, step))
        with autocast:
            loss = segmentation_loss(network, image, label, config.semantic_loss, config.segmentation.aux_head)
        optimizer_step(optimizer, loss, learning_rate(config.optim, step, run.steps))
        if average is not None:
            update_average(average, network, average_decay(config.optim, step))
        if on_step is not None:
            on_step(loss.item())
    return (network if average is None else average).eval()


@torch.no_grad()
def confusion_over_frames(
    network: SegmentationNet,
    frames: Iterable[LabelledImage],
    device: torch.device,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    window: int | None = None,
) -> np.ndarray:
    """Confusion matrix of ``network`` on whole frames, summed over all of them.

    ``flip``, ``scales``, ``window``: predict with test-time augmentation or in windows
    (:func:`ivfuse.models.class_probabilities`).

    Returns:
        ``(9, 9)`` int64, ``[true class, predicted class]`` pixel counts (label 255 not counted).
    """
    network.eval()
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for frame in frames:
        image = frame.image[None].to(device).float() / 255
        prediction = class_probabilities(network, image, flip=flip, scales=scales, window=window).argmax(1)[0].cpu().numpy()
        confusion += confusion_matrix(frame.label.numpy(), prediction)
    return confusion


# Options added after runs were saved, with the value that computes what those runs computed: left
# out of the fingerprint at that value, so that the saved runs still count.
ADDED_OPTIONS = {
    ("segmentation", "norm"): "group",
    ("semantic_loss", "lovasz_weight"): 0.0,
    ("optim", "ema_decay"): 0.0,
    ("augment", "copy_paste"): 0.0,
}


def run_fingerprint(frames: Sequence[LabelledImage], config: BenchConfig, seed: int) -> str:
    """SHA-256 (hex) of everything one run's result depends on: what it trains on and how.

    The training frames (names, pixels, labels), the test frames' likewise, the config and the
    seed. Where the train frames end is checked from the saved result's frame counts. How the
    run is executed (``[run]`` threads, device, amp) is left out: it changes the weights in their
    last bits, not what the run measures.

    Args:
        frames: the kind's training frames followed by its test frames.
        config: the benchmark config.
        seed: the run's seed.
    """
    digest = hashlib.sha256()
    settings = dataclasses.asdict(config)
    for key in ("threads", "device", "amp"):
        settings["run"].pop(key)
    for (section, key), value in ADDED_OPTIONS.items():
        if settings[section][key] == value:
            del settings[section][key]
    digest.update(json.dumps({"config": settings, "seed": seed}, sort_keys=True).encode())
    for frame in frames:
        digest.update(frame.name.encode() + b"\0")
        digest.update(frame.image.numpy().tobytes())
        digest.update(frame.label.numpy().tobytes())
    return digest.hexdigest()


def _load_finished(path: Path, kind: str, seed: int, frames: tuple[int, int]) -> SeedResult | None:
    """The result saved at ``path`` by an earlier run, or ``None`` (absent, unreadable, or made
    with another split of the same frames: ``frames`` is ``(train, test)`` counts)."""
    try:
        saved = json.loads(path.read_text())
        if (saved["train_frames"], saved["test_frames"]) != frames:
            return None
        confusion = np.array(saved["confusion"], dtype=np.int64).reshape(NUM_CLASSES, NUM_CLASSES)
        return SeedResult(kind, seed, confusion, segmentation_scores(confusion), float(saved["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_bench(
    data: BenchData,
    config: BenchConfig,
    seeds: Sequence[int],
    *,
    device: str | None = None,
    progress: bool = True,
    results_dir: str | os.PathLike | None = None,
) -> list[SeedResult]:
    """Train and test one network per input kind and seed.

    With ``results_dir``, every finished run is saved there (one JSON file named by its
    :func:`run_fingerprint`, and the trained weights beside it as ``.safetensors``), and a run whose file is already there is not trained again. So a
    benchmark that was stopped goes on where it stopped, and input kinds can be run by separate
    processes into one folder, then summarised by one call with every kind (nothing retrains).

    Args:
        data: frames from :func:`load_bench_data`.
        config: see :func:`load_config`.
        seeds: e.g. ``[0, 1, 2]``; each gives every kind the same initial weights and crops.
        device: overrides ``config.run.device``.
        progress: show a progress bar per run (tqdm, on stderr).
        results_dir: folder of finished runs (created if missing), or ``None``.

    Returns:
        One :class:`SeedResult` per kind and seed, kinds in input order, then seeds (runs go
        seed by seed, so a stopped benchmark has run every kind for its first seeds).
    """
    if not seeds:
        raise ValueError("no seed given")
    if config.segmentation.classes != NUM_CLASSES:
        raise ValueError(f"[segmentation] classes must be {NUM_CLASSES} (the MSRS classes of the labels), not {config.segmentation.classes}")
    device = resolve_device(device or config.run.device)
    prepare_training_threads(config.run.threads)
    results = []
    # Seed by seed, every kind of a seed before the next seed: a benchmark stopped part way has
    # the same seeds for every kind, so its kinds can already be compared pair by pair.
    for seed in seeds:
        for kind in data.kinds:
            frames = (len(data.train[kind]), len(data.test[kind]))
            if results_dir is not None:
                saved = Path(results_dir) / f"{run_fingerprint(data.train[kind] + data.test[kind], config, seed)}.json"
                finished = _load_finished(saved, kind, seed, frames)
                if finished is not None:
                    if progress:
                        tqdm.write(f"{kind} seed {seed}: finished earlier ({saved})", file=sys.stderr)
                    results.append(finished)
                    continue
            began = time.perf_counter()
            with tqdm(total=config.run.steps, desc=f"{kind} seed {seed}", unit="step", disable=not progress) as bar:

                def show(loss: float) -> None:
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                    bar.update()

                network = train_segmentation(data.train[kind], config, seed, device, show)
            confusion = confusion_over_frames(network, data.test[kind], device)
            results.append(SeedResult(kind, seed, confusion, segmentation_scores(confusion), time.perf_counter() - began))
            if results_dir is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                record = {"kind": kind, "seed": seed, "train_frames": frames[0], "test_frames": frames[1],
                          "seconds": results[-1].seconds, "confusion": confusion.tolist()}
                # Weights first: a JSON file marks the run finished, so its weights are there too.
                save_network(network, saved.with_suffix(".safetensors"), kind=kind, seed=str(seed),
                             run_config=json.dumps(dataclasses.asdict(config)))
                with atomic_write(saved) as stream:
                    stream.write(json.dumps(record).encode())
    # results[i] is seed i // kinds, kind i % kinds: regroup kind by kind.
    kinds = len(data.kinds)
    return [results[position * kinds + index] for index in range(kinds) for position in range(len(seeds))]


def seed_row(result: SeedResult) -> dict[str, float]:
    """The reported scores of one run: :data:`SCORES` keys, then :data:`IOU_COLUMNS`."""
    row = {key: result.scores[key] for key in SCORES}
    row.update(zip(IOU_COLUMNS, result.scores["iou"]))
    return row


def summarize(results: Sequence[SeedResult]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and standard deviation over seeds of every reported score, per input kind.

    A NaN score (a class absent from labels and predictions) is left out of its mean.

    Returns:
        ``summary[kind][score] = {"mean", "std", "n"}``; std with ddof 1 (NaN for one seed).

    Example:
        >>> summarize(results)["ivfuse"]["miou"]["mean"]  # doctest: +SKIP
        0.61
    """
    summary = {}
    for kind in dict.fromkeys(result.kind for result in results):
        rows = [seed_row(result) for result in results if result.kind == kind]
        summary[kind] = {}
        for score in rows[0]:
            values = np.array([row[score] for row in rows], dtype=np.float64)
            values = values[~np.isnan(values)]
            summary[kind][score] = {
                "mean": float(values.mean()) if values.size else math.nan,
                "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
                "n": int(values.size),
            }
    return summary


def paired_differences(results: Sequence[SeedResult], score: str = "miou", confidence: float = 0.95) -> list[dict]:
    """Differences of ``score`` between input kinds, paired by seed, with a confidence interval.

    The kinds of one seed share their initial weights and every crop, so the per-seed difference
    ``a - b`` removes most of the seed-to-seed spread that the ``mean ± std`` of each kind shows.
    For every pair of kinds (``a`` listed before ``b``), over the seeds both ran: mean of the
    differences, their std (ddof 1), standard error ``std / sqrt(n)``, the Student-t interval
    ``mean ± t(confidence, n - 1) * se``, and whether it excludes 0 (the paired t-test at level
    ``1 - confidence``).

    Args:
        results: runs from :func:`run_bench`.
        score: a key of :data:`SCORES` or a per-class column of :data:`~ivfuse.classes.IOU_COLUMNS`
            (fractions); seeds where either kind's score is NaN (a class absent from labels and
            predictions) are left out.
        confidence: of the interval.

    Returns:
        One dict per pair: ``a, b, n, mean, std, se, low, high`` (fractions; NaN where ``n < 2``)
        and ``resolved`` (bool).

    Example:
        >>> paired_differences(results)[0]  # doctest: +SKIP
        {'a': 'ir', 'b': 'vis', 'n': 5, 'mean': 0.021, 'std': 0.008, 'se': 0.0036, 'low': 0.011, 'high': 0.031, 'resolved': True}
    """
    from scipy import stats

    by_kind: dict[str, dict[int, float]] = {}
    for result in results:
        value = float(seed_row(result)[score])
        if not math.isnan(value):
            by_kind.setdefault(result.kind, {})[result.seed] = value
    kinds = list(dict.fromkeys(result.kind for result in results))
    rows = []
    for index, a in enumerate(kinds):
        for b in kinds[index + 1 :]:
            seeds = sorted(set(by_kind.get(a, {})) & set(by_kind.get(b, {})))
            differences = np.array([by_kind[a][seed] - by_kind[b][seed] for seed in seeds])
            n = len(differences)
            mean = float(differences.mean()) if n else math.nan
            std = float(differences.std(ddof=1)) if n > 1 else math.nan
            se = std / math.sqrt(n) if n > 1 else math.nan
            half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se if n > 1 else math.nan
            low, high = mean - half, mean + half
            rows.append({"a": a, "b": b, "n": n, "mean": mean, "std": std, "se": se, "low": low, "high": high,
                         "resolved": bool(n > 1 and (low > 0 or high < 0))})
    return rows


def paired_markdown(results: Sequence[SeedResult], score: str = "miou", confidence: float = 0.95) -> str:
    """:func:`paired_differences` as a Markdown table, in percentage points."""
    lines = [
        f"{SCORES[score]}, paired by seed: difference of the row's two kinds (first minus second), "
        f"percentage points; {confidence:.0%} Student-t interval; resolved = the interval excludes 0.",
        "",
        "| first − second | seeds | mean | std | standard error | interval | resolved |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for row in paired_differences(results, score, confidence):
        points = {key: 100 * row[key] for key in ("mean", "std", "se", "low", "high")}
        interval = "–" if math.isnan(points["low"]) else f"[{points['low']:+.2f}, {points['high']:+.2f}]"
        lines.append(
            f"| {row['a']} − {row['b']} | {row['n']} | {points['mean']:+.2f} | {points['std']:.2f} | {points['se']:.2f} | "
            f"{interval} | {'yes' if row['resolved'] else 'no'} |"
        )
    return "\n".join(lines + [""])


def _percent(stats: dict[str, float]) -> str:
    mean, std = (100 * stats[key] for key in ("mean", "std"))
    if math.isnan(mean):
        return "–"
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def summary_markdown(results: Sequence[SeedResult], data: BenchData) -> str:
    """The summary as Markdown: the protocol in one line, scores table, per-class IoU table, and
    (with two kinds or more) the paired differences of mIoU (:func:`paired_markdown`).

    Best mean per column in bold. Values in percent, mean ± std over seeds (ddof 1).
    """
    summary = summarize(results)
    seeds = sorted({result.seed for result in results})
    kind = data.kinds[0]
    lines = [
        f"Segmentation trained from scratch per input kind on {len(data.train[kind])} labelled frames, "
        f"tested on {len(data.test[kind])} whole frames (one confusion matrix over all of them); "
        f"seeds {', '.join(map(str, seeds))}. Percent, mean ± std over seeds (ddof 1); best in bold.",
        "",
    ]
    for columns in (list(SCORES), list(IOU_COLUMNS)):
        headings = [SCORES.get(column, column.removeprefix("iou_").replace("_", " ")) for column in columns]
        lines += ["| input | " + " | ".join(headings) + " |", "|---|" + "---:|" * len(columns)]
        best = {column: np.nanmax([summary[k][column]["mean"] for k in summary] + [-np.inf]) for column in columns}
        for name, stats in summary.items():
            cells = [_percent(stats[c]) if stats[c]["mean"] != best[c] else f"**{_percent(stats[c])}**" for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if len(summary) > 1:
        lines += ["Paired by seed:", "", paired_markdown(results)]
    if data.left_out:
        lines += [f"Left out ({len(data.left_out)}):", ""] + [f"- {line}" for line in data.left_out] + [""]
    return "\n".join(lines)


def write_report(results: Sequence[SeedResult], data: BenchData, folder: str | os.PathLike) -> dict[str, Path]:
    """Write ``per_seed.csv``, ``summary.csv``, ``paired.csv`` and ``summary.md`` into ``folder``, each atomically.

    * ``per_seed.csv``: ``input, seed, train_frames, test_frames, seconds``, the scores
      (fractions in ``[0, 1]``), then the 81 confusion counts ``conf_<true>_<predicted>``.
    * ``summary.csv``: ``input, score, mean, std, n`` (fractions; std with ddof 1).
    * ``paired.csv``: ``score, first, second, seeds, mean, std, se, low, high, resolved``: the
      paired differences (:func:`paired_differences`, 95 %) of every :data:`SCORES` score and
      every class's IoU.
    * ``summary.md``: see :func:`summary_markdown`.

    Returns:
        ``{"per_seed", "summary_csv", "paired_csv", "summary_md"}`` -> paths.
    """
    folder = Path(folder)
    written = {name: folder / file for name, file in
               (("per_seed", "per_seed.csv"), ("summary_csv", "summary.csv"), ("paired_csv", "paired.csv"), ("summary_md", "summary.md"))}
    confusion_columns = [f"conf_{true}_{predicted}" for true in range(NUM_CLASSES) for predicted in range(NUM_CLASSES)]
    rows = [["input", "seed", "train_frames", "test_frames", "seconds", *SCORES, *IOU_COLUMNS, *confusion_columns]]
    for result in results:
        frames = (len(data.train[result.kind]), len(data.test[result.kind]))
        scores = [repr(value) for value in seed_row(result).values()]
        rows.append([result.kind, result.seed, *frames, f"{result.seconds:.1f}", *scores, *result.confusion.ravel().tolist()])
    write_csv(written["per_seed"], rows)
    rows = [["input", "score", "mean", "std", "n"]]
    for kind, stats in summarize(results).items():
        rows += [[kind, score, repr(s["mean"]), repr(s["std"]), s["n"]] for score, s in stats.items()]
    write_csv(written["summary_csv"], rows)
    rows = [["score", "first", "second", "seeds", "mean", "std", "se", "low", "high", "resolved"]]
    for score in (*SCORES, *IOU_COLUMNS):
        for row in paired_differences(results, score):
            rows.append([score, row["a"], row["b"], row["n"], *(repr(row[key]) for key in ("mean", "std", "se", "low", "high")), row["resolved"]])
    write_csv(written["paired_csv"], rows)
    with atomic_write(written["summary_md"]) as stream:
        stream.write(summary_markdown(results, data).encode("utf-8"))
    return written
