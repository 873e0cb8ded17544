"""Saving and loading network weights as safetensors (never pickle), with the architecture inside.

A weights file holds the tensors plus two metadata strings: ``network`` (the class name) and
``config`` (its architecture as JSON), so a file always rebuilds the network it was saved from and
a file of the wrong architecture is refused with a clear message.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes

from .io import atomic_write
from .models import FusionConfig, FusionNet, SegmentationConfig, SegmentationNet

NETWORKS = {"FusionNet": (FusionNet, FusionConfig), "SegmentationNet": (SegmentationNet, SegmentationConfig)}


def shipped_weights(network: str) -> Path:
    """Path of the weights shipped inside the package.

    ``"fusion"`` and ``"segmentation"``: the networks of ``configs/semantic.toml`` (defaults of
    ``ivfuse fuse`` and ``ivfuse segment``); ``"fusion_content"``: the content-only network of
    ``configs/content.toml``, where that run starts.
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
        raise WeightsError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as weights:
            return dict(weights.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable safetensors file ({error})") from None


def load_network(path: str | os.PathLike, expected: str | None = None) -> torch.nn.Module:
    """Rebuild a network from a weights file written by :func:`save_network`.

    Args:
        path: ``.safetensors`` file.
        expected: class name the caller needs (e.g. ``"FusionNet"``); anything else is refused.

    Returns:
        The network in eval mode on the CPU.

    Raises:
        WeightsError: missing or corrupt file, unknown or unexpected network, tensors that do not
            match the architecture.
    """
    path = Path(path)
    metadata = read_metadata(path)
    name = metadata.get("network")
    if name not in NETWORKS or (expected is not None and name != expected):
        wanted = expected or " or ".join(NETWORKS)
        raise WeightsError(f"{path}: holds {name or 'no ivfuse network'}, expected {wanted}")
    network_class, config_class = NETWORKS[name]
    try:
        network = network_class(config_class.from_dict(json.loads(metadata["config"])))
        network.load_state_dict(load_file(str(path)))
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as error:
        reason = str(error).split("\n")[0]
        raise WeightsError(f"{path}: weights do not fit the {name} architecture ({reason})") from None
    return network.eval()
