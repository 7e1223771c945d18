"""The one shape check of vidtriplane: a state_dict against what a model expects, key by key.

    check_state_dict(model, sd, what="EG3D generator")   # raises StateDictMismatch, or returns None
    load_strict(model, sd, what="EG3D generator")        # check, then model.load_state_dict(sd, strict=True)
    diff_shapes(found, expected)                         # the same comparison over {key: shape} maps

``diff_shapes`` works on plain ``{key: shape}`` maps, so the registry's structure checks
(``vidtriplane.weights.validate``, shapes of models built on the meta device) and the loaders use the same
comparison and the same wording: the first few missing keys, unexpected keys and shape mismatches, with
counts, so a wrong checkpoint (or a wrong prefix) is obvious from the message alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from vidtriplane.errors import VidtriplaneError

if TYPE_CHECKING:
    import torch
    from torch import nn

SHOW = 5  # keys listed per category
Shape = tuple[int, ...]
ShapeMap = Mapping[str, Shape]


@dataclass(frozen=True)
class ShapeDiff:
    """How a ``{key: shape}`` map differs from the expected one (all empty: it fits)."""

    missing: list[str]
    """Expected keys that are absent."""
    unexpected: list[str]
    """Keys that are not expected."""
    mismatched: list[tuple[str, Shape, Shape]]
    """(key, shape found, shape expected) for every key present in both with different shapes."""

    @property
    def ok(self) -> bool:
        """Whether the map fits exactly."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> list[str]:
        """One phrase per kind of problem, e.g. ``"2 missing keys: a, b"`` ([] when it fits)."""
        parts = []
        if self.missing:
            parts.append(_listing(self.missing, "missing key"))
        if self.unexpected:
            parts.append(_listing(self.unexpected, "unexpected key"))
        if self.mismatched:
            shapes = [f"{k} (checkpoint {list(a)} vs model {list(b)})" for k, a, b in self.mismatched]
            parts.append(_listing(shapes, "shape mismatch"))
        return parts


class StateDictMismatch(VidtriplaneError, ValueError):
    """The state_dict does not fit the module. ``missing``, ``unexpected``, ``mismatched`` hold every case."""

    def __init__(self, message: str, *, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, Shape, Shape]]) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


def shapes_of(state: Mapping[str, Any]) -> dict[str, Shape]:
    """``{key: shape}`` of a state_dict (tensors, meta tensors, or anything with ``.shape``)."""
    return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}


def diff_shapes(found: ShapeMap, expected: ShapeMap) -> ShapeDiff:
    """Compare ``found`` with ``expected`` key by key (order of ``expected`` kept in the lists)."""
    return ShapeDiff(
        missing=[k for k in expected if k not in found],
        unexpected=[k for k in found if k not in expected],
        mismatched=[(k, tuple(found[k]), tuple(v)) for k, v in expected.items()
                    if k in found and tuple(found[k]) != tuple(v)],
    )


def check_shapes(found: ShapeMap, expected: ShapeMap, *, what: str) -> None:
    """Raise :class:`StateDictMismatch` unless ``found`` has exactly the keys and shapes of ``expected``."""
    diff = diff_shapes(found, expected)
    if diff.ok:
        return
    message = (f"{what}: the weights do not fit the model{_common_prefix_hint(diff.missing, diff.unexpected)}; "
               + "; ".join(diff.describe())
               + ". Check that the weight file is the one for this model and configuration.")
    raise StateDictMismatch(message, missing=diff.missing, unexpected=diff.unexpected, mismatched=diff.mismatched)


def check_state_dict(module: "nn.Module", state_dict: Mapping[str, "torch.Tensor"], *, what: str) -> None:
    """Raise :class:`StateDictMismatch` unless ``state_dict`` has exactly the module's keys and shapes."""
    check_shapes(shapes_of(state_dict), shapes_of(module.state_dict()), what=what)


def load_strict(module: "nn.Module", state_dict: Mapping[str, "torch.Tensor"], *, what: str) -> "nn.Module":
    """Check the keys and shapes, then ``load_state_dict(strict=True)``. Returns the module."""
    check_state_dict(module, state_dict, what=what)
    module.load_state_dict(dict(state_dict), strict=True)
    return module


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
