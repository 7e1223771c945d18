"""Which torch device a setting names: ``auto`` and explicit names, checked against this machine.

    device = resolve_device(cfg.runtime.device, what="runtime.device")   # torch.device("cuda") or ("cpu")

Shared by the render pipeline (``runtime.device``) and the preprocessing networks (``landmarks.device``),
so that ``--device`` means the same everywhere and a device the machine lacks is one clear line.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vidtriplane.errors import VidtriplaneError

if TYPE_CHECKING:
    import torch


class DeviceError(VidtriplaneError, RuntimeError):
    """A device setting this machine cannot honour (the message says what to use instead)."""


def resolve_device(name: str, *, what: str = "runtime.device") -> "torch.device":
    """``auto`` -> cuda when available, else cpu; ``cpu``, ``cuda``, ``cuda:N`` checked to exist here.
    ``what`` names the setting in messages."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"{what}={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{what}={name}: CUDA is not available on this machine (torch {torch.__version__}); "
                          "use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"{what}={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
