"""Saving and loading network weights as safetensors (never pickle), with the architecture inside.

A weights file holds the tensors plus two metadata strings: ``network`` (the class name) and
``config`` (its architecture as JSON), so a file always rebuilds the network it was saved from and
a file of the wrong architecture is refused with a clear message. Training checkpoints
(:func:`load_checkpoint`) are ``torch.save`` files read with ``weights_only=True``: only tensors and
plain values are unpickled, so a file that would import or call anything is refused unrun.
Weights or checkpoints holding NaN or Inf are refused too: they would fuse to garbage silently.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes

from .io import atomic_write, first_line
from .models import FusionConfig, FusionNet, SegmentationConfig, SegmentationNet

NETWORKS = {"FusionNet": (FusionNet, FusionConfig), "SegmentationNet": (SegmentationNet, SegmentationConfig)}


def shipped_weights(network: str) -> Path:
    """Path of the weights shipped inside the package.

    ``"fusion"`` and ``"segmentation"`` (one pair, ``configs/semantic_v4.toml``): the defaults
    of ``ivfuse fuse`` and ``ivfuse segment``;
    ``"fusion_content"``: the content-only network of ``configs/content_v3.toml``, where the
    semantic run starts.
    """
    return Path(str(resources.files("ivfuse") / "weights" / f"{network}.safetensors"))


class WeightsError(ValueError):
    """A weights file is missing, corrupt or of another architecture; the message names the file."""


def save_network(network: torch.nn.Module, path: str | os.PathLike, **metadata: str) -> Path:
    """Write a network's weights and architecture atomically to a ``.safetensors`` file.

    Example:
        >>> save_network(FusionNet(), "fusion.safetensors", trained_with="configs/content.toml")
        PosixPath('fusion.safetensors')
    """
    path = Path(path)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
    info = {"network": type(network).__name__, "config": json.dumps(network.config.to_dict()), **metadata}
    with atomic_write(path) as stream:
        stream.write(safetensors_bytes(tensors, metadata=info))
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata strings of a weights file (``network``, ``config`` and free-form notes)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: {'a folder, not a weights file' if path.is_dir() else 'weights file not found'}")
    try:
        with safe_open(str(path), framework="pt") as weights:
            return dict(weights.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable safetensors file ({first_line(error)})") from None


def load_network(path: str | os.PathLike, expected: str | None = None) -> torch.nn.Module:
    """Rebuild a network from a weights file written by :func:`save_network`.

    Args:
        path: ``.safetensors`` file.
        expected: class name the caller needs (e.g. ``"FusionNet"``); anything else is refused.

    Returns:
        The network in eval mode on the CPU.

    Raises:
        WeightsError: missing, empty, truncated or corrupt file (a pickle is not read at all),
            unknown or unexpected network, tensors that do not match the architecture, NaN or Inf
            in a tensor. One line naming the file.

    Example:
        >>> load_network(shipped_weights("fusion"), expected="FusionNet").config.widths
        (8, 16, 32, 48)
    """
    path = Path(path)
    metadata = read_metadata(path)
    name = metadata.get("network")
    if name not in NETWORKS or (expected is not None and name != expected):
        wanted = expected or " or ".join(NETWORKS)
        raise WeightsError(f"{path}: holds {name or 'no ivfuse network'}, expected {wanted}")
    network_class, config_class = NETWORKS[name]
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable safetensors file ({first_line(error)})") from None
    refuse_non_finite(path, tensors)
    try:
        network = network_class(config_class.from_dict(json.loads(metadata["config"])))
        network.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise WeightsError(f"{path}: weights do not fit the {name} architecture ({first_line(error)})") from None
    return network.eval()


def load_checkpoint(path: str | os.PathLike, keys: Sequence[str] = (), *, map_location: str | torch.device = "cpu") -> dict:
    """Read a training checkpoint (a ``torch.save`` dict) without running anything in it.

    Args:
        path: the checkpoint file, e.g. ``runs/semantic/checkpoint.pt``.
        keys: entries the caller needs; a dict lacking any of them is refused.
        map_location: where the tensors go, as for ``torch.load``.

    Returns:
        The dict, its tensors (any dtype, any nesting in dicts and lists) on ``map_location``,
        every floating-point one finite.

    Raises:
        WeightsError: missing, empty, truncated or corrupt file; a pickle holding anything but
            tensors and plain values (refused by ``weights_only=True``, never run); not a dict with
            ``keys``; NaN or Inf in a tensor. One line naming the file.

    Example:
        >>> state = load_checkpoint("runs/tiny/checkpoint.pt", ["fusion", "step"])
        >>> state["step"]
        26
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: {'a folder, not a checkpoint file' if path.is_dir() else 'checkpoint file not found'}")
    try:
        with warnings.catch_warnings():
            # torch warns over several lines about pickle protocols of foreign files; the error
            # below (if any) says all the user needs, in one line.
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _refusal(error)
        detail = f" ({detail})" if detail else ""
        raise WeightsError(f"{path}: refused: not a checkpoint of tensors and plain values{detail}; nothing in it was run") from None
    except Exception as error:
        # Damaged zip or pickle data surfaces as EOFError, OSError, RuntimeError, KeyError, ...
        # depending on where the bytes break; to the user every one means the same thing.
        raise WeightsError(f"{path}: not a readable checkpoint, truncated or corrupt ({first_line(error)})") from None
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        raise WeightsError(f"{path}: not an ivfuse training checkpoint (no {', '.join(missing)})")
    refuse_non_finite(path, state)
    return state


def refuse_non_finite(path: str | os.PathLike, tensors) -> None:
    """Raise :class:`WeightsError` naming ``path`` and the first floating-point tensor holding NaN or Inf.

    Args:
        path: the file the tensors came from (for the message).
        tensors: a tensor, or dicts / lists / tuples nesting them (a state dict, a checkpoint);
            other values are ignored.

    Example:
        >>> refuse_non_finite("w.safetensors", {"conv.weight": torch.tensor([1.0, float("nan")])})
        Traceback (most recent call last):
        ivfuse.serialization.WeightsError: w.safetensors: tensor conv.weight holds 1 NaN/Inf value(s); the file is corrupt or from a diverged training run
    """
    for name, tensor in _named_tensors(tensors):
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise WeightsError(f"{path}: tensor {name} holds {bad} NaN/Inf value(s); the file is corrupt or from a diverged training run")


def _named_tensors(value, name: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _named_tensors(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _named_tensors(item, f"{name}[{index}]")


def _refusal(error: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler refused (e.g. ``GLOBAL posix.system``), or ``""``.

    Its message runs over many lines in a layout that changes between torch versions, and it
    advises loading with ``weights_only=False`` or allow-listing the global: for a file refused
    here, exactly the wrong thing. So only the line naming the refused operation is kept.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        _, found, rest = line.partition("WeightsUnpickler error:")
        if found:
            detail = rest.strip() or (lines[index + 1] if index + 1 < len(lines) else "")
            break
    else:
        detail = next((line for line in lines if "unsupported" in line.lower()), "")
    return detail.split(". Please")[0].rstrip(".")
