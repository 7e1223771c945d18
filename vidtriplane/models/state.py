"""Strict state_dict checks with one readable error (shared by every model in vidtriplane).

    check_state_dict(model, sd, what="EG3D generator")   # raises StateDictMismatch, or returns None
    load_strict(model, sd, what="EG3D generator")        # check, then model.load_state_dict(sd, strict=True)

The error names the first few missing keys, unexpected keys and shape mismatches, with counts, so a
wrong checkpoint (or a wrong prefix) is obvious from the message alone.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

SHOW = 5  # keys listed per category


class StateDictMismatch(ValueError):
    """The state_dict does not fit the module. ``missing``, ``unexpected``, ``mismatched`` hold every case."""

    def __init__(self, message: str, *, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


def _listing(items: list[str], noun: str) -> str:
    shown = ", ".join(items[:SHOW])
    more = f", ... ({len(items) - SHOW} more)" if len(items) > SHOW else ""
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}: {shown}{more}"


def _common_prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """Suggest a prefix problem when every unexpected key is a missing key with a prefix added/removed."""
    if not missing or not unexpected:
        return ""
    m, u = missing[0], unexpected[0]
    if u.endswith(m) and u != m:
        return f" (the checkpoint keys carry an extra prefix {u[: len(u) - len(m)]!r}: strip it)"
    if m.endswith(u) and u != m:
        return f" (the checkpoint keys lack the prefix {m[: len(m) - len(u)]!r})"
    return ""


def check_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Raise :class:`StateDictMismatch` unless ``state_dict`` has exactly the module's keys and shapes."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in expected.items()
                  if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(_listing(missing, "missing key"))
    if unexpected:
        parts.append(_listing(unexpected, "unexpected key"))
    if mismatched:
        shapes = [f"{k} (checkpoint {list(a)} vs model {list(b)})" for k, a, b in mismatched]
        parts.append(_listing(shapes, "shape mismatch"))
    message = (f"{what}: the weights do not fit the model{_common_prefix_hint(missing, unexpected)}; "
               + "; ".join(parts)
               + ". Check that the weight file is the one for this model and configuration.")
    raise StateDictMismatch(message, missing=missing, unexpected=unexpected, mismatched=mismatched)


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str) -> nn.Module:
    """Check the keys and shapes, then ``load_state_dict(strict=True)``. Returns the module."""
    check_state_dict(module, state_dict, what=what)
    module.load_state_dict(dict(state_dict), strict=True)
    return module
