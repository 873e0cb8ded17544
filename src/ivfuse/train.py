"""The training loop. A run is a config file (``configs/*.toml``) plus ``ivfuse train --config``.

The schedule is SeAFusion's, in rounds. Round ``r`` has two phases:

1. **fusion**: train the fusion network for ``fusion_steps`` with the content loss plus
   ``semantic_weight * r`` times the semantic loss. The semantic loss is the segmentation
   network's OHEM cross-entropy on the fused colour image of the labelled pairs of the batch; the
   segmentation network's weights are held fixed, gradients flow through it into the fusion
   network. Round 0 therefore has no semantic loss: a warm-up (or fine-tuning of
   ``init_fusion``). With ``[salient_target] weight`` > 0 the labelled pairs of every fusion
   phase also pull the fused intensity to IR in the background around the labelled objects of
   the given classes (:func:`ivfuse.losses.salient_target_loss`).
2. **segmentation**: train the segmentation network for ``segmentation_steps`` on labelled pairs
   fused by the current fusion network (frozen, no gradients): each training crop fused on the
   fly, or (``[schedule] segmentation_input = "frames"``) each whole pair fused once when the
   phase starts and the crops cut from those images.

Then the held-out validation pairs are scored (content loss; mIoU and per-class IoU once the
segmentation network has been trained). Content-only training is the same loop with one round
and no segmentation steps (``configs/content.toml``).

One readable loop over a global step counter: find the step's phase, draw its batch (a pure
function of seed and step, see :mod:`ivfuse.data`), forward, loss, backward, step; log a CSV row;
every few minutes write a checkpoint atomically. ``resume=True`` continues from the last checkpoint
and, because batches and learning rates depend only on the step, ends with the same weights as a
run that was never interrupted (on the CPU; CUDA kernels are not bitwise deterministic).

Under ``torchrun --nproc_per_node=N`` every process draws the same batch and trains on its own
contiguous slice of it; DistributedDataParallel averages the gradients (gloo on CPU, NCCL on GPU).
Process 0 logs, validates and writes files.

Outputs in ``out_dir``: ``log.csv`` (one row per step), ``validation.csv`` (one row per round),
``checkpoint.pt`` (networks + optimizers + step + the run's config, which a resumption must
match; loaded with ``weights_only=True``),
``fusion.safetensors`` and, when segmentation was trained, ``segmentation.safetensors``; under
torchrun also ``rank_digests.txt`` (each process's :func:`weights_digest`, which must agree).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .classes import IGNORE_INDEX, IOU_COLUMNS, NUM_CLASSES, OBJECT_CLASS_IDS
from .color import merge_luma_rgb, split_luma
from .data import Augment, LabelledImage, Sample, draw_batch, draw_crops, load_pairs, night_copies
from .evaluate import image_stems, read_image_list
from .fuser import Fuser
from .io import atomic_write, first_line, quantize, write_csv
from .losses import (
    ContentWeights,
    SalientTargetConfig,
    SemanticLossConfig,
    content_loss,
    object_surround,
    salient_target_loss,
    semantic_loss,
)
from .metrics.segmentation import confusion_matrix, segmentation_scores
from .models import FusionConfig, FusionNet, SegmentationConfig, SegmentationNet, blend_sources
from .runtime import prepare_training_threads, resolve_device
from .serialization import WeightsError, load_checkpoint, load_network, save_network

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")
#: The loss terms logged per step in ``log.csv``, in column order (empty where a step has none).
LOSS_PARTS = ("intensity", "texture", "ssim", "salient", "semantic")


@dataclass(frozen=True)
class DataConfig:
    """Dataset roots (each with ``ir/``, ``vi/``, optional ``label/``), relative to ``root``.

    ``validation_pairs`` labelled pairs are held out of training (spread evenly over the sorted
    labelled pairs, so day and night frames both appear) and scored after every round.
    ``train_lists``: empty, or one entry per ``train`` folder: a text file (relative to ``root``)
    of the pair names to train on, in the format of ``ivfuse eval --images``
    (:func:`ivfuse.evaluate.read_image_list`: one name per line), or ``""`` for all of the
    folder's pairs, e.g. ``RoadScene/splits/train.txt`` keeps RoadScene's dev names out.
    """

    root: str = "../shared/datasets"
    train: tuple[str, ...] = ("MSRS/train", "RoadScene/train")
    validation_pairs: int = 0
    train_lists: tuple[str, ...] = ()

    def __post_init__(self):
        if self.train_lists and len(self.train_lists) != len(self.train):
            raise ValueError(f"[data] train_lists must be empty or name one file (or \"\") per train folder ({len(self.train)})")


def training_pairs(data: DataConfig, root: Path) -> list[Sample]:
    """The pairs of every ``data.train`` folder under ``root``, kept to its ``train_lists`` names.

    Raises:
        ValueError: a list file is unreadable, or names a pair its folder does not hold.
    """
    samples = []
    for index, folder in enumerate(data.train):
        pairs = load_pairs([root / folder])
        listing = data.train_lists[index] if data.train_lists else ""
        if listing:
            names = image_stems(read_image_list(root / listing))
            missing = names - {sample.name.rsplit("/", 1)[-1] for sample in pairs}
            if missing:
                raise ValueError(f"[data] train_lists: {root / listing} names pairs not in {folder}: {', '.join(sorted(missing)[:5])}")
            pairs = [sample for sample in pairs if sample.name.rsplit("/", 1)[-1] in names]
        samples += pairs
    return samples


@dataclass(frozen=True)
class ScheduleConfig:
    """Rounds of (fusion phase, segmentation phase); see the module docstring.

    ``fusion_steps`` and ``segmentation_steps`` hold one value for every round or one per round.
    ``init_fusion``: fusion weights (``.safetensors``) to start from instead of a random network.
    ``init_segmentation``: likewise for the segmentation network (e.g. to fine-tune the shipped
    one on your frames, or in a later phase on larger crops); the architecture must match
    ``[segmentation]``.
    ``semantic_gradient``: what the semantic loss may change. ``"image"``: every fused pixel.
    ``"weight"`` (blend head only): only the per-pixel source weight, so the loss decides which
    source a pixel takes while edges and detail stay what the content loss made them (the
    residual reaches the segmentation network detached). ``"objects"``: only the pixels of
    labelled objects (classes 1-8) and the background within ``semantic_margin`` pixels of them,
    so the loss can make objects stand out but cannot rework the background, where most of its
    change to the image was measured (docs/training.md, "Where the semantic loss changes the
    image").
    ``fusion_trainable``: what the fusion phases train. ``"all"``: the whole fusion network.
    ``"salience"`` (needs ``[model] salience = true``): only its salience gain, the rest stays as
    ``init_fusion`` made it, so every change to the image is an added share of IR local contrast
    (docs/training.md, "Salience gain").
    ``segmentation_input``: what the segmentation phases train on. ``"crops"``: each training
    crop of the pair, fused on the fly. ``"frames"``: each whole labelled pair fused once when the
    phase starts (the fusion network is frozen during it), as ``ivfuse fuse`` writes it (8-bit
    RGB), with the crops cut from those images: the network sees the images it segments at
    inference, and a step costs the segmentation network only (docs/segmentation.md, "Whole
    fused frames").
    ``night_copies`` (needs ``segmentation_input = "frames"``): the segmentation phases also train
    on a night-camera copy of each labelled day pair, fused whole like the others: its visible
    image darkened to a mean luma drawn in ``night_luma`` (grey levels) with sensor noise up to
    ``night_noise`` grey levels, IR unchanged (:func:`ivfuse.data.night_copies`; drawn once per
    run from ``[run] seed``).
    """

    rounds: int = 1
    fusion_steps: tuple[int, ...] = (3000,)
    segmentation_steps: tuple[int, ...] = (0,)
    semantic_weight: float = 0.0
    init_fusion: str = ""
    init_segmentation: str = ""
    semantic_gradient: str = "image"
    semantic_margin: int = 8
    fusion_trainable: str = "all"
    segmentation_input: str = "crops"
    night_copies: bool = False
    night_luma: tuple[float, float] = (15.0, 45.0)
    night_noise: float = 3.0

    def __post_init__(self):
        if self.segmentation_input not in ("crops", "frames"):
            raise ValueError(f"[schedule] segmentation_input must be 'crops' or 'frames', not {self.segmentation_input!r}")
        if self.night_copies and self.segmentation_input != "frames":
            raise ValueError("[schedule] night_copies needs segmentation_input = 'frames'")
        if len(self.night_luma) != 2 or not 0 <= self.night_luma[0] <= self.night_luma[1] <= 255:
            raise ValueError(f"[schedule] night_luma must be [low, high] grey levels with 0 <= low <= high <= 255, not {list(self.night_luma)}")
        if self.fusion_trainable not in ("all", "salience"):
            raise ValueError(f"[schedule] fusion_trainable must be 'all' or 'salience', not {self.fusion_trainable!r}")
        if self.semantic_gradient not in ("image", "weight", "objects"):
            raise ValueError(f"[schedule] semantic_gradient must be 'image', 'weight' or 'objects', not {self.semantic_gradient!r}")
        if self.semantic_margin < 0:
            raise ValueError(f"[schedule] semantic_margin must be >= 0, not {self.semantic_margin}")
        for name in ("fusion_steps", "segmentation_steps"):
            steps = getattr(self, name)
            steps = (steps,) if isinstance(steps, int) else tuple(steps)
            if len(steps) not in (1, self.rounds) or min(steps) < 0:
                raise ValueError(f"[schedule] {name} must be one step count >= 0 or one per round ({self.rounds})")
            object.__setattr__(self, name, steps)

    def steps_in_round(self, round_index: int) -> tuple[int, int]:
        """``(fusion steps, segmentation steps)`` of round ``round_index``."""
        return tuple(steps[round_index if len(steps) > 1 else 0] for steps in (self.fusion_steps, self.segmentation_steps))


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay over all steps of one network.

    ``ema_decay``: above 0, the run also keeps an exponential moving average of the network's
    weights (:func:`update_average`), and what it validates and saves is the average; the
    optimiser still steps the trained weights. 0 (the default) saves the trained weights.
    """

    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    ema_decay: float = 0.0

    def __post_init__(self):
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), not {self.ema_decay}")


@dataclass(frozen=True)
class RunSettings:
    """How the run executes; ``device`` is ``cpu``, ``cuda`` or ``cuda:N`` (``--device`` overrides).

    ``amp``: bfloat16 autocast on CUDA (no loss scaling needed); ignored on the CPU.
    """

    batch_size: int = 8
    seed: int = 0
    threads: int = 2
    checkpoint_minutes: float = 3.0
    device: str = "cpu"
    amp: bool = True


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run depends on; one TOML file with these sections."""

    data: DataConfig = field(default_factory=DataConfig)
    model: FusionConfig = field(default_factory=FusionConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    augment: Augment = field(default_factory=Augment)
    loss: ContentWeights = field(default_factory=ContentWeights)
    semantic_loss: SemanticLossConfig = field(default_factory=SemanticLossConfig)
    salient_target: SalientTargetConfig = field(default_factory=SalientTargetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    fusion_optim: OptimConfig = field(default_factory=OptimConfig)
    segmentation_optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunSettings = field(default_factory=RunSettings)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a TOML run config; unknown sections or keys are an error naming them.

    ``overrides`` are ``"section.key=value"`` strings applied on top (see :func:`read_config`).

    Example:
        >>> config = load_config("configs/content.toml", ["schedule.fusion_steps=1000"])
        >>> config.schedule.fusion_steps
        (1000,)
    """
    return read_config(path, RunConfig, overrides)


def read_config(path: str | os.PathLike, config_type: type[T], overrides: Sequence[str] = ()) -> T:
    """Read a TOML file into ``config_type``, a dataclass whose fields are dataclass sections.

    Each ``[section]`` fills the field of that name; missing sections and keys keep their
    defaults, TOML arrays become tuples. Unknown sections or keys are an error naming them.

    Args:
        path: the TOML file.
        config_type: e.g. :class:`RunConfig`.
        overrides: ``"section.key=value"`` strings, each replacing (or adding) one key of the file,
            so that a variant of a run (an ablation, a shorter budget) is the same file plus
            the changes spelled out in its command. ``value`` is a TOML value (``false``,
            ``0.5``, ``[1, 2]``, ``"text"``); anything that does not parse as one is a string.

    Raises:
        ValueError: the file is unreadable or not TOML, has unknown sections or keys, a value
            of the wrong type or one its section refuses, or an override is not
            ``section.key=value``. The message names the file.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{path}: cannot read config ({error})") from None
    for override in overrides:
        name, sep, text = override.partition("=")
        section, dot, key = name.strip().partition(".")
        if not (sep and dot and section and key):
            raise ValueError(f"override {override!r}: expected section.key=value, e.g. schedule.fusion_steps=1000")
        try:
            value = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"{path}: {section} is not a [section], so override {override!r} cannot set a key in it")
        table[key] = value
    sections = {}
    for section in dataclasses.fields(config_type):
        values = raw.pop(section.name, {})
        section_type = section.default_factory().__class__
        known = {f.name for f in dataclasses.fields(section_type)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{path}: unknown key(s) in [{section.name}]: {', '.join(sorted(unknown))}")
        defaults = section_type()
        values = {key: _typed(f"{path}: [{section.name}] {key}", value, getattr(defaults, key), key in _SIZE_KEYS)
                  for key, value in values.items()}
        try:
            sections[section.name] = section_type(**values)
        except ValueError as error:
            # A section type used under several names ([fusion_optim], [segmentation_optim])
            # cannot name its section itself.
            message = str(error) if str(error).startswith("[") else f"[{section.name}] {error}"
            raise ValueError(f"{path}: {message}") from None
    if raw:
        raise ValueError(f"{path}: unknown section(s): {', '.join(sorted(raw))}")
    return config_type(**sections)


#: Keys (in any section) that size or count something that must exist: 0 is refused too.
_SIZE_KEYS = {"widths", "kv_strides", "heads", "classes", "detail_widths", "context_widths", "head_width",
              "crop_size", "rounds", "batch_size", "threads"}


def _typed(where: str, value, default, size: bool = False):
    """``value`` read from TOML, checked against the type of its field's default.

    A single value for a list field becomes a one-element tuple (``train = "MSRS/train"``), an
    integer for a float field a float; anything else of the wrong type is an error naming it.
    No number of any config means anything when negative, NaN or infinite (TOML allows all
    three), so those are refused here, once for every key; ``size`` keys must also be > 0.
    """
    if isinstance(default, tuple):
        items = value if isinstance(value, list) else [value]
        return tuple(_typed(where, item, default[0], size) for item in items) if default else tuple(items)
    expected = type(default)
    if expected is float and type(value) is int:
        value = float(value)
    if type(value) is not expected:
        kinds = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        raise ValueError(f"{where} must be {kinds[expected]}, not {value!r}")
    if expected in (int, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, not {value!r}")
    if expected in (int, float) and not (value > 0 if size else value >= 0):
        raise ValueError(f"{where} must be {'> 0' if size else '>= 0'}, not {value!r}")
    return value


@dataclass(frozen=True)
class Phase:
    """A stretch of global steps ``[start, start + steps)`` that trains one network."""

    round: int
    network: str  # "fusion" or "segmentation"
    start: int
    steps: int
    network_start: int  # steps this network trained before the phase: drives its learning rate
    semantic_weight: float


def plan_phases(schedule: ScheduleConfig) -> list[Phase]:
    """The schedule as a list of non-empty phases in training order.

    Example:
        >>> [(p.round, p.network, p.start) for p in plan_phases(ScheduleConfig(2, (10,), (5,), 0.1))]
        [(0, 'fusion', 0), (0, 'segmentation', 10), (1, 'fusion', 15), (1, 'segmentation', 25)]
    """
    phases, start, trained = [], 0, {"fusion": 0, "segmentation": 0}
    for round_index in range(schedule.rounds):
        for network, steps in zip(("fusion", "segmentation"), schedule.steps_in_round(round_index)):
            if steps:
                phases.append(Phase(round_index, network, start, steps, trained[network], schedule.semantic_weight * round_index))
                start += steps
                trained[network] += steps
    return phases


def learning_rate(optim: OptimConfig, step: int, total_steps: int) -> float:
    """Linear warm-up, then cosine decay to 5% of ``optim.lr`` at ``total_steps``."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps)
    return optim.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(network: torch.nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the network's parameters; :func:`optimizer_step` sets its learning rate per step."""
    return torch.optim.AdamW(network.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float) -> None:
    """One update: set the learning rate, back-propagate ``loss``, step."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def average_decay(optim: OptimConfig, step: int) -> float:
    """Weight of the old average at the network's step ``step`` (0-based): ``optim.ema_decay``,
    lower over the first steps, ``(1 + step) / (10 + step)``, so that the average soon leaves the
    initial weights behind."""
    return min(optim.ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_average(average: torch.nn.Module, network: torch.nn.Module, decay: float) -> None:
    """One step of an exponential moving average of ``network``'s weights, kept in ``average``.

    ``average = decay * average + (1 - decay) * network`` over every floating-point tensor of the
    state dict (parameters and BatchNorm's running statistics, so the average is normalised by
    statistics of its own kind); integer buffers (BatchNorm's step counter) are copied.

    Args:
        average: a network of the same architecture (e.g. a ``copy.deepcopy`` of ``network``).
        network: the network being trained.
        decay: in ``[0, 1)``; 0 copies ``network``.

    Example:
        >>> network = torch.nn.Linear(2, 1)
        >>> average = copy.deepcopy(network)
        >>> update_average(average, network, 0.99)
    """
    for mine, theirs in zip(average.state_dict().values(), network.state_dict().values(), strict=True):
        if mine.is_floating_point():
            mine.lerp_(theirs, 1 - decay)
        else:
            mine.copy_(theirs)


def mixed_precision(device: torch.device, amp: bool):
    """bfloat16 autocast on CUDA when ``amp`` (no loss scaling needed); a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()


def segmentation_loss(
    network: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, config: SemanticLossConfig, aux: bool
) -> torch.Tensor:
    """The loss that trains the segmentation network: :func:`~ivfuse.losses.semantic_loss` of its heads.

    The segmentation phase of :func:`train` and the segmentation benchmark
    (:mod:`ivfuse.segbench`) both train with it.

    Args:
        network: a :class:`SegmentationNet` (or its DistributedDataParallel wrapper) in train mode.
        image: ``(B, 3, S, S)`` float RGB in ``[0, 1]``.
        label: ``(B, S, S)`` int64 class ids, :data:`IGNORE_INDEX` where unlabelled.
        config: OHEM threshold, minimum kept share, auxiliary weight, class weights.
        aux: add the auxiliary head's loss (the network must have one).

    Returns:
        Scalar float tensor.
    """
    outputs = network(image, aux=aux)
    logits, aux_logits = outputs if aux else (outputs, None)
    return semantic_loss(logits, label, config, aux_logits)


def hold_out(samples: list[Sample], count: int) -> tuple[list[Sample], list[Sample]]:
    """Split ``count`` labelled pairs, evenly spaced over the labelled ones, off for validation.

    Returns:
        ``(training, validation)``; the training list keeps its order.
    """
    labelled = [sample for sample in samples if sample.label is not None]
    if count > len(labelled):
        raise ValueError(f"[data] validation_pairs = {count}, but only {len(labelled)} labelled pairs were found")
    # By identity, not name: two dataset roots may hold the same file stem.
    held = {id(labelled[int((i + 0.5) * len(labelled) / count)]) for i in range(count)}
    return [s for s in samples if id(s) not in held], [s for s in samples if id(s) in held]


def train(
    config: RunConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    data_root: str | None = None,
    device: str | None = None,
) -> list[Path]:
    """Run the schedule of ``config``; returns the paths of the final weights files.

    Args:
        config: the run (see :func:`load_config`).
        out_dir: run folder for logs, checkpoint and final weights.
        resume: continue from ``out_dir/checkpoint.pt`` if it exists; without it, a checkpoint
            already there is an error (it belongs to an earlier run).
        data_root: overrides ``config.data.root``.
        device: overrides ``config.run.device``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run, schedule = config.run, config.schedule
    rank, world, device = _start_processes(device or run.device)
    checkpoint_path, run_record, state = out_dir / "checkpoint.pt", _run_record(config), None
    if checkpoint_path.exists():
        if not resume:
            raise ValueError(f"{out_dir}: holds the checkpoint of an earlier run; pass --resume to continue it, or choose another --out")
        state = load_checkpoint(checkpoint_path, _CHECKPOINT_KEYS, map_location=device)
        _check_same_run(checkpoint_path, state.get("run_config"), run_record)
    if run.batch_size % world:
        raise ValueError(f"[run] batch_size ({run.batch_size}) must be divisible by the number of processes ({world})")
    prepare_training_threads(run.threads)
    torch.manual_seed(run.seed)

    root = Path(data_root or config.data.root)
    samples, validation = hold_out(training_pairs(config.data, root), config.data.validation_pairs)
    labelled = [sample for sample in samples if sample.label is not None]
    # Fused whole with the labelled pairs in frames mode; never part of the fusion phases' pool.
    segmentation_pairs = list(labelled)
    if schedule.night_copies:
        segmentation_pairs += night_copies(labelled, schedule.night_luma, schedule.night_noise, run.seed)
    phases = plan_phases(schedule)
    total = {name: sum(p.steps for p in phases if p.network == name) for name in ("fusion", "segmentation")}
    if not labelled and (total["segmentation"] or schedule.semantic_weight):
        raise ValueError("the schedule trains segmentation, but no training pair has a label/ file")
    through_weight = schedule.semantic_gradient == "weight"
    if through_weight and config.model.head != "blend":
        raise ValueError("[schedule] semantic_gradient = 'weight' needs [model] head = 'blend'")
    if through_weight and config.model.salience:
        raise ValueError("[schedule] semantic_gradient = 'weight' cannot be combined with [model] salience = true")
    if schedule.fusion_trainable == "salience" and not config.model.salience:
        raise ValueError("[schedule] fusion_trainable = 'salience' needs [model] salience = true")

    fusion = FusionNet(config.model)
    segmentation = SegmentationNet(config.segmentation)
    if schedule.init_fusion:
        initial = load_network(schedule.init_fusion, expected="FusionNet")
        # The same architecture, or the same without the salience gain: a fresh gain starts near 0.
        if initial.config not in (config.model, dataclasses.replace(config.model, salience=False)):
            raise ValueError(f"{schedule.init_fusion}: architecture {initial.config} differs from [model] {config.model}")
        fusion.load_state_dict(initial.state_dict(), strict=initial.config == config.model)
    if schedule.init_segmentation:
        initial = load_network(schedule.init_segmentation, expected="SegmentationNet")
        if initial.config != config.segmentation:
            raise ValueError(f"{schedule.init_segmentation}: architecture {initial.config} differs from [segmentation] {config.segmentation}")
        segmentation.load_state_dict(initial.state_dict())
    # The part of the fusion network its phases train; the rest never needs gradients (and
    # DistributedDataParallel must only see parameters that get them).
    fusion_part = fusion.salience if schedule.fusion_trainable == "salience" else fusion
    fusion.requires_grad_(False)
    fusion_part.requires_grad_(True)
    fusion.to(device)
    segmentation.to(device)
    optimizers = {"fusion": make_optimizer(fusion_part, config.fusion_optim), "segmentation": make_optimizer(segmentation, config.segmentation_optim)}
    optim_configs = {"fusion": config.fusion_optim, "segmentation": config.segmentation_optim}
    networks = {"fusion": fusion, "segmentation": segmentation}
    # Moving averages of the weights ([*_optim] ema_decay), started from the initial weights.
    averages = {name: copy.deepcopy(network).requires_grad_(False) for name, network in networks.items() if optim_configs[name].ema_decay}
    start = 0
    if state is not None:
        try:
            fusion.load_state_dict(state["fusion"])
            segmentation.load_state_dict(state["segmentation"])
            for name, optimizer in optimizers.items():
                optimizer.load_state_dict(state[f"{name}_optimizer"])
            for name, average in averages.items():
                average.load_state_dict(state[f"{name}_average"])
            start = int(state["step"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise WeightsError(f"{checkpoint_path}: its tensors do not fit the networks of this config ({first_line(error)})") from None
    # The network being trained runs through its DDP wrapper (gradients are averaged across
    # processes); the frozen one is called directly, so DDP never waits for its gradients.
    trained = {"fusion": fusion, "segmentation": segmentation}
    if world > 1:
        trained = {name: DistributedDataParallel(network) for name, network in trained.items()}
    autocast = mixed_precision(device, run.amp)

    is_main = rank == 0
    end = sum(p.steps for p in phases)
    log = _open_log(out_dir / "log.csv", start, ["step", "round", "network", "lr", "loss", *LOSS_PARTS, "seconds"], is_main)
    validation_log = _open_log(out_dir / "validation.csv", start, ["step", "round", "content_loss", "miou", *IOU_COLUMNS], is_main)
    last_checkpoint = time.monotonic()
    fused_frames, fused_for = None, None
    progress = tqdm(range(start, end), initial=start, total=end, desc="train", unit="step", disable=not is_main)
    for step in progress:
        began = time.perf_counter()
        phase = next(p for p in phases if p.start <= step < p.start + p.steps)
        network_step = phase.network_start + step - phase.start
        lr = learning_rate(optim_configs[phase.network], network_step, total[phase.network])
        fusion.train(phase.network == "fusion")
        fusion_part.requires_grad_(phase.network == "fusion")
        segmentation.train(phase.network == "segmentation").requires_grad_(phase.network == "segmentation")

        share = slice(rank * run.batch_size // world, (rank + 1) * run.batch_size // world)
        parts = {}
        if phase.network == "segmentation" and schedule.segmentation_input == "frames":
            if fused_for is not phase:
                fused_frames, fused_for = fuse_frames(fusion, segmentation_pairs, device), phase
            images, label = draw_crops(fused_frames, run.batch_size, config.augment, run.seed, step)
            image, label = images[share].to(device), label[share].to(device)
        else:
            pool = samples if phase.network == "fusion" else labelled
            batch = draw_batch(pool, run.batch_size, config.augment, run.seed, step)
            ir, vis, label = (tensor[share].to(device) for tensor in batch)
            vis_y, cbcr = split_luma(vis)
        if phase.network == "fusion":
            with autocast:
                if through_weight:
                    weight, residual = trained["fusion"](ir, vis_y, return_blend=True)
                    fused = blend_sources(weight, residual, ir, vis_y)
                else:
                    fused = trained["fusion"](ir, vis_y)
                loss, parts = content_loss(fused, ir, vis_y, config.loss)
                if config.salient_target.weight:
                    region = object_surround(label, config.salient_target.class_ids, config.salient_target.margin)
                    salient = salient_target_loss(fused, ir, region)
                    loss = loss + config.salient_target.weight * salient
                    parts["salient"] = salient.item()
                has_label = (label != IGNORE_INDEX).flatten(1).any(dim=1)
                # Unlabelled pairs of the batch give the content loss only.
                if phase.semantic_weight and has_label.any():
                    seen = blend_sources(weight, residual.detach(), ir, vis_y) if through_weight else fused
                    if schedule.semantic_gradient == "objects":
                        seen = objects_only_gradient(seen, label, schedule.semantic_margin)
                    logits = segmentation(merge_luma_rgb(seen, cbcr)[has_label])
                    semantic = semantic_loss(logits, label[has_label], config.semantic_loss)
                    loss = loss + phase.semantic_weight * semantic
                    parts["semantic"] = semantic.item()
        else:
            if schedule.segmentation_input == "crops":
                with torch.no_grad(), autocast:
                    image = merge_luma_rgb(fusion(ir, vis_y).float(), cbcr)
            with autocast:
                loss = segmentation_loss(trained["segmentation"], image, label, config.semantic_loss, config.segmentation.aux_head)
                parts["semantic"] = loss.item()
        optimizer_step(optimizers[phase.network], loss, lr)
        if phase.network in averages:
            update_average(averages[phase.network], networks[phase.network], average_decay(optim_configs[phase.network], network_step))

        seconds = time.perf_counter() - began
        log.writerow([step, phase.round, phase.network, f"{lr:.6g}", f"{loss.item():.6g}",
                      *(f"{parts[k]:.6g}" if k in parts else "" for k in LOSS_PARTS), f"{seconds:.3f}"])
        progress.set_postfix(phase=f"{phase.round}/{phase.network[:3]}", loss=f"{loss.item():.4f}", img_s=f"{run.batch_size / seconds:.1f}")
        round_end = max(p.start + p.steps for p in phases if p.round == phase.round)
        if is_main and step + 1 == round_end and validation:
            segmentation_trained = any(p.network == "segmentation" and p.start <= step for p in phases)
            scores = validate(averages.get("fusion", fusion), averages.get("segmentation", segmentation) if segmentation_trained else None,
                              validation, config.loss, device)
            validation_log.writerow([step, phase.round, f"{scores['content_loss']:.6g}", f"{scores['miou']:.4f}", *(f"{v:.4f}" for v in scores["iou"])])
            progress.write(f"round {phase.round}: validation content loss {scores['content_loss']:.4f}, mIoU {scores['miou']:.4f}")
        if is_main and time.monotonic() - last_checkpoint > 60 * run.checkpoint_minutes:
            _save_checkpoint(checkpoint_path, networks, averages, optimizers, step + 1, (log, validation_log), run_record)
            last_checkpoint = time.monotonic()

    outputs = []
    if is_main:
        _save_checkpoint(checkpoint_path, networks, averages, optimizers, end, (log, validation_log), run_record)
        log.close()
        validation_log.close()
        provenance = {"steps": str(end), "run_config": json.dumps(dataclasses.asdict(config))}
        saved = {name: averages.get(name, network).eval() for name, network in networks.items()}
        outputs.append(save_network(saved["fusion"], out_dir / "fusion.safetensors", **provenance))
        if total["segmentation"]:
            outputs.append(save_network(saved["segmentation"], out_dir / "segmentation.safetensors", **provenance))
    if world > 1:
        _record_rank_digests(out_dir, rank, world, fusion, segmentation)
        dist.destroy_process_group()
    return outputs


def objects_only_gradient(fused: torch.Tensor, label: torch.Tensor, margin: int) -> torch.Tensor:
    """``fused`` unchanged, but gradients pass only at labelled objects and the background near them.

    What ``[schedule] semantic_gradient = "objects"`` shows the segmentation network: the
    semantic loss still sees the whole image, but only pixels of classes 1-8 and the
    background within ``margin`` pixels of them can be changed by it.

    Args:
        fused: ``(B, 1, H, W)`` float.
        label: ``(B, H, W)`` integer class ids (``IGNORE_INDEX`` pixels get no gradient).
        margin: reach around the objects in pixels, ``>= 0``.

    Example:
        >>> fused = torch.rand(1, 1, 8, 8, requires_grad=True)
        >>> label = torch.zeros(1, 8, 8, dtype=torch.long)
        >>> label[0, 4, 4] = 2
        >>> objects_only_gradient(fused, label, 1).sum().backward()
        >>> int(fused.grad.sum())  # the person pixel and its 8 neighbours
        9
    """
    region = object_surround(label, OBJECT_CLASS_IDS, margin, include_objects=True)
    return torch.where(region, fused, fused.detach())


def fuse_frames(fusion: FusionNet, samples: Sequence[Sample], device: torch.device) -> list[LabelledImage]:
    """Each labelled pair fused whole by :class:`~ivfuse.fuser.Fuser`, as ``ivfuse fuse`` writes
    it: 8-bit RGB (the visible image's colour), never resized.

    Returns:
        one :class:`~ivfuse.data.LabelledImage` per sample, ``image (3, H, W)`` uint8 on the CPU.

    Example:
        >>> from ivfuse.models import FusionConfig, FusionNet
        >>> pair = Sample("a", torch.zeros(1, 30, 40, dtype=torch.uint8), torch.zeros(3, 30, 40, dtype=torch.uint8), torch.zeros(30, 40, dtype=torch.uint8))
        >>> fuse_frames(FusionNet(FusionConfig()), [pair], torch.device("cpu"))[0].image.shape
        torch.Size([3, 30, 40])
    """
    was_training = fusion.training
    fuser = Fuser(fusion.eval(), device=str(device))
    frames = []
    for sample in samples:
        fused = fuser.fuse(sample.ir[0].numpy() / np.float32(255), sample.vis.permute(1, 2, 0).numpy() / np.float32(255))
        # A grey visible image gives a grey fusion: repeated to the RGB the segmentation network takes.
        levels = torch.from_numpy(quantize(np.atleast_3d(fused))).permute(2, 0, 1)
        frames.append(LabelledImage(sample.name, levels.expand(3, -1, -1).contiguous(), sample.label))
    fusion.train(was_training)
    return frames


def validation_frame(sample: Sample, multiple: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """A held-out labelled pair as validation scores it: the whole frame, cropped to ``multiple``.

    Returns:
        ``ir (1, 1, H, W)``, ``vis_y (1, 1, H, W)``, ``cbcr (1, 2, H, W)`` float in ``[0, 1]`` and
        ``label (1, H, W)`` int64, on ``device``.
    """
    height, width = (side // multiple * multiple for side in sample.ir.shape[-2:])
    ir = sample.ir[None, :, :height, :width].to(device).float() / 255
    vis_y, cbcr = split_luma(sample.vis[None, :, :height, :width].to(device).float() / 255)
    return ir, vis_y, cbcr, sample.label[None, :height, :width].to(device).long()


@torch.no_grad()
def validate(
    fusion: FusionNet, segmentation: SegmentationNet | None, samples: list[Sample], weights: ContentWeights, device: torch.device
) -> dict:
    """Score whole held-out images (cropped to the fusion network's size multiple).

    Returns:
        ``content_loss`` (mean over images), ``miou`` (mean IoU over the classes present in
        labels or predictions; NaN without ``segmentation``) and ``iou`` (one per class).
    """
    fusion.eval()
    multiple = fusion.size_multiple
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    content = 0.0
    for sample in samples:
        ir, vis_y, cbcr, label = validation_frame(sample, multiple, device)
        fused = fusion(ir, vis_y)
        content += content_loss(fused, ir, vis_y, weights)[0].item() / len(samples)
        if segmentation is not None:
            segmentation.eval()
            prediction = segmentation(merge_luma_rgb(fused, cbcr)).argmax(1)[0].cpu().numpy()
            confusion += confusion_matrix(label[0].cpu().numpy(), prediction)
    if segmentation is None:
        return {"content_loss": content, "miou": float("nan"), "iou": [float("nan")] * NUM_CLASSES}
    scores = segmentation_scores(confusion)
    return {"content_loss": content, "miou": scores["miou"], "iou": scores["iou"]}


def _start_processes(device_name: str) -> tuple[int, int, torch.device]:
    """Join the process group when launched by ``torchrun``; returns ``(rank, world size, device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def weights_digest(*networks: torch.nn.Module) -> str:
    """SHA-256 over the names and bytes of the networks' tensors: equal digests, equal weights."""
    digest = hashlib.sha256()
    for network in networks:
        for name, tensor in sorted(network.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _record_rank_digests(out_dir: Path, rank: int, world: int, *networks: torch.nn.Module) -> None:
    """Write every process's :func:`weights_digest` to ``rank_digests.txt``; they must agree."""
    digests = [None] * world
    dist.all_gather_object(digests, weights_digest(*networks))
    if rank == 0:
        (out_dir / "rank_digests.txt").write_text("".join(f"{d}\n" for d in digests))
        if len(set(digests)) > 1:
            print("warning: the processes ended with different weights (see rank_digests.txt)", file=sys.stderr)


def _run_record(config: RunConfig) -> str:
    """The config as JSON, less what may change between a run and its resumption: where the data
    lives, the thread count, the device and how often checkpoints are written."""
    record = dataclasses.asdict(config)
    del record["data"]["root"]
    for key in ("threads", "device", "checkpoint_minutes"):
        del record["run"][key]
    return json.dumps(record, sort_keys=True)


def _check_same_run(path: Path, recorded: str | None, current: str) -> None:
    """Refuse to resume a checkpoint written by a run with another config."""
    if recorded == current:
        return
    if recorded is None:
        raise ValueError(f"{path}: records no run config (written by an older ivfuse); start the run afresh in another --out")
    before, now = json.loads(recorded), json.loads(current)
    # A key added to ivfuse after the checkpoint was written ran at its default, which means "off".
    defaults = json.loads(_run_record(RunConfig()))
    changed = [f"{section}.{key}" for section in now for key in now[section]
               if before.get(section, {}).get(key, defaults[section][key]) != now[section][key]]
    if not changed:
        return
    raise ValueError(f"{path}: written by a run with another config ({', '.join(changed)} differ); resume with the same config, or choose another --out")


#: What :func:`_save_checkpoint` always writes besides ``run_config`` (which older checkpoints lack);
#: ``<network>_average`` only for a network with ``ema_decay``.
_CHECKPOINT_KEYS = ("fusion", "segmentation", "fusion_optimizer", "segmentation_optimizer", "step")


def _save_checkpoint(path: Path, networks: dict, averages: dict, optimizers: dict, step: int, logs, run_record: str) -> None:
    # Log rows first: a resumed run keeps the rows before its checkpoint's step and redoes the rest.
    for log in logs:
        log.flush()
    state = {name: network.state_dict() for name, network in networks.items()}
    state.update({"step": step, "run_config": run_record})
    state.update({f"{name}_optimizer": optimizer.state_dict() for name, optimizer in optimizers.items()})
    state.update({f"{name}_average": average.state_dict() for name, average in averages.items()})
    with atomic_write(path) as stream:
        torch.save(state, stream)


class _Log:
    """CSV writer that keeps the underlying file open and flushes on demand; a no-op off process 0."""

    def __init__(self, stream=None):
        self.stream = stream
        self.writer = csv.writer(stream) if stream else None

    def writerow(self, row):
        if self.writer:
            self.writer.writerow(row)

    def flush(self):
        if self.stream:
            self.stream.flush()

    def close(self):
        if self.stream:
            self.stream.close()


def _open_log(path: Path, start: int, header: list[str], active: bool = True) -> _Log:
    if not active:
        return _Log()
    # A resumed run keeps the complete rows logged before its checkpoint's step (the rest are about
    # to be redone), rewritten atomically so that a second kill cannot cost the kept rows.
    # Rows are matched by column name: a log written before a column was added keeps its rows, with
    # the new column empty. A row cut short by the kill has missing fields (None) and is dropped.
    rows = []
    if start and path.exists():
        with path.open(newline="") as stream:
            for row in csv.DictReader(stream):
                if None not in row and None not in row.values() and int(row["step"]) < start:
                    rows.append([row.get(column, "") for column in header])
    write_csv(path, [header, *rows])
    return _Log(path.open("a", newline=""))
