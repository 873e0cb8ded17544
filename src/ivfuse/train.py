"""The training loop. A run is a config file (``configs/*.toml``) plus ``ivfuse train --config``.

One readable loop: draw the batch of this step (a pure function of seed and step, see
:mod:`ivfuse.data`), forward, loss, backward, step; log a CSV row; every few minutes write a
checkpoint atomically. ``resume=True`` continues from the last checkpoint and, because batches
and the learning-rate schedule depend only on the step, ends with the same weights as a run that
was never interrupted.

Outputs in ``out_dir``: ``log.csv`` (one row per step), ``checkpoint.pt`` (model + optimizer +
step; loaded with ``weights_only=True``), ``fusion.safetensors`` (final weights).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .color import split_luma
from .data import Augment, draw_batch, load_pairs
from .losses import ContentWeights, content_loss
from .models import FusionConfig, FusionNet
from .serialization import save_network

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class DataConfig:
    """Dataset roots (each with ``ir/``, ``vi/``, optional ``label/``), relative to ``root``."""

    root: str = "../shared/datasets"
    train: tuple[str, ...] = ("MSRS/train", "RoadScene/train")


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 3000
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 2
    checkpoint_minutes: float = 3.0


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run depends on; one TOML file with these sections."""

    data: DataConfig = field(default_factory=DataConfig)
    model: FusionConfig = field(default_factory=FusionConfig)
    augment: Augment = field(default_factory=Augment)
    loss: ContentWeights = field(default_factory=ContentWeights)
    optim: OptimConfig = field(default_factory=OptimConfig)


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read a TOML run config; unknown sections or keys are an error naming them.

    Example:
        >>> config = load_config("configs/content.toml")
        >>> config.optim.steps
        3000
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{path}: cannot read config ({error})") from None
    sections = {}
    for section in dataclasses.fields(RunConfig):
        values = raw.pop(section.name, {})
        section_type = section.default_factory().__class__
        known = {f.name for f in dataclasses.fields(section_type)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{path}: unknown key(s) in [{section.name}]: {', '.join(sorted(unknown))}")
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
        sections[section.name] = section_type(**values)
    if raw:
        raise ValueError(f"{path}: unknown section(s): {', '.join(sorted(raw))}")
    return RunConfig(**sections)


def learning_rate(optim: OptimConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 5% of ``optim.lr``."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, optim.steps - optim.warmup_steps)
    return optim.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(config: RunConfig, out_dir: str | os.PathLike, *, resume: bool = False, data_root: str | None = None) -> Path:
    """Train the fusion network with the content losses; returns the final weights' path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    optim = config.optim
    torch.set_num_threads(optim.threads)
    # Denormal floats appear as weights settle and make CPU kernels many times slower.
    torch.set_flush_denormal(True)
    torch.manual_seed(optim.seed)
    root = Path(data_root or config.data.root)
    samples = load_pairs([root / folder for folder in config.data.train], labels=False)

    model = FusionNet(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    start = 0
    checkpoint_path = out_dir / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    log = _open_log(out_dir / "log.csv", start, ["step", "lr", "loss", "intensity", "texture", "ssim", "seconds"])

    model.train()
    last_checkpoint = time.monotonic()
    progress = tqdm(range(start, optim.steps), initial=start, total=optim.steps, desc="train", unit="step")
    for step in progress:
        began = time.perf_counter()
        lr = learning_rate(optim, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ir, vis, _ = draw_batch(samples, optim.batch_size, config.augment, optim.seed, step)
        vis_y, _ = split_luma(vis)
        fused = model(ir, vis_y)
        loss, parts = content_loss(fused, ir, vis_y, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        seconds = time.perf_counter() - began
        log.writerow([step, f"{lr:.6g}", f"{loss.item():.6g}", *(f"{parts[k]:.6g}" for k in ("intensity", "texture", "ssim")), f"{seconds:.3f}"])
        progress.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{optim.batch_size / seconds:.1f}")
        if time.monotonic() - last_checkpoint > 60 * optim.checkpoint_minutes:
            log.flush()
            _save_checkpoint(checkpoint_path, model, optimizer, step + 1)
            last_checkpoint = time.monotonic()
    log.flush()
    _save_checkpoint(checkpoint_path, model, optimizer, optim.steps)
    return save_network(model.eval(), out_dir / "fusion.safetensors", steps=str(optim.steps))


def _save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


class _Log:
    """CSV writer that keeps the underlying file open and flushes on demand."""

    def __init__(self, stream, writer):
        self.stream, self.writer = stream, writer

    def writerow(self, row):
        self.writer.writerow(row)

    def flush(self):
        self.stream.flush()


def _open_log(path: Path, start: int, header: list[str]) -> _Log:
    # A resumed run drops rows logged after its checkpoint: they are about to be redone.
    rows = []
    if start and path.exists():
        with path.open(newline="") as stream:
            rows = [row for row in csv.reader(stream)][1:]
        rows = [row for row in rows if int(row[0]) < start]
    stream = path.open("w", newline="")
    writer = csv.writer(stream)
    writer.writerow(header)
    writer.writerows(rows)
    return _Log(stream, writer)
