"""Device and precision choice: CUDA when available, CPU otherwise; bf16/fp16 autocast only where it helps."""

from __future__ import annotations

import contextlib

import torch

from promptgen.errors import ConfigError


def choose_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu. An unavailable explicit device is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps; got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for, but CUDA is not available here; use --device cpu")
    return resolved


def choose_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision name, or None for plain fp32.

    'auto' is bf16 on CUDA (frozen encoders lose nothing measurable) and fp32 elsewhere:
    CPU autocast is slower than fp32 on most machines.
    """
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise ConfigError(f"precision must be one of auto, fp32, bf16, fp16; got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision fp16 is not supported on the CPU; use fp32 or bf16")
    return table[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for ``dtype``, or a no-op when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def cuda_devices() -> list[int]:
    """Every CUDA device (for ``torch.random.fork_rng``): none on a machine without CUDA."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
