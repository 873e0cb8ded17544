"""Where and how a job runs: the torch device and the CPU settings shared by training,
the segmentation benchmark and fusion."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a device; asking for CUDA without it is an error.

    Raises:
        ValueError: CUDA asked for but not available (a one-line message for the CLI).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return device


def prepare_training_threads(threads: int) -> None:
    """Use ``threads`` CPU threads and flush denormal floats to zero for a training job."""
    torch.set_num_threads(threads)
    # Denormal floats appear as weights settle and make CPU kernels many times slower.
    torch.set_flush_denormal(True)
