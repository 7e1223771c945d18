"""Optical-flow tracking of the face box between detector runs (a hook of the dlib tracker).

Detecting the face again in every frame (dlib's HOG detector on a region around the last face) costs
about 5 ms a frame and its box jumps by whole HOG cells, which the 68-point predictor passes on as
landmark jitter. Instead, between *anchor* frames where the detector runs:

1. The stable landmarks of the previous frame (brows, nose, eyes: points 17-47) are followed into this
   frame with pyramidal Lucas-Kanade flow (``cv2.calcOpticalFlowPyrLK``) on a region around the face,
   scaled so that the face is at most ``face_px`` pixels wide; a point counts only when tracking it back
   lands within ``max_error`` (scaled) pixels of where it started (forward-backward check, Kalal et al., ICPR 2010).
2. A similarity transform (``cv2.estimateAffinePartial2D``, least median of squares) maps the anchor
   frame's landmarks onto the followed points; the anchor's detector box moved by it is this frame's box.
   Because the box is always the anchor box under the face's own motion, it neither drifts nor jumps.
3. The predictor then places the 68 points in that box as usual.

The detector runs again (a new anchor) every ``anchor_every`` frames, or as soon as fewer than
``min_points`` of the points track, so a face that leaves or is covered is noticed within that many
frames at most.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from vidtriplane.config.preprocess import FlowConfig

STABLE_POINTS = np.arange(17, 48)
"""Brows, nose and eyes of the iBUG 68 points: rigid with the head, textured, unaffected by speech."""

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FlowState:
    """What flow tracking keeps from the previous frame and the last anchor."""

    image: np.ndarray = field(compare=False)
    """The previous frame's search region, grey and scaled (what this frame's flow starts from)."""
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Frame rectangle (x0, y0, x1, y1) of ``image``."""
    scale: float = 1.0
    """Region pixels per frame pixel."""
    points: np.ndarray = field(default=None, compare=False)
    """Stable landmarks [P, 2] of the previous frame (frame pixels)."""
    anchor_points: np.ndarray = field(default=None, compare=False)
    """Stable landmarks [P, 2] at the last anchor."""
    anchor_box: Box = (0.0, 0.0, 0.0, 0.0)
    """Detector box at the last anchor."""
    score: float = 0.0
    """Detector score at the last anchor (flow frames report it)."""
    since_anchor: int = 0
    """Frames since the last anchor."""


def _region(box: Box, width: int, height: int, cfg: FlowConfig) -> tuple[tuple[int, int, int, int], float]:
    bw, bh = box[2] - box[0], box[3] - box[1]
    m = cfg.margin
    x0, y0 = max(0, int(box[0] - m * bw)), max(0, int(box[1] - m * bh))
    x1, y1 = min(width, int(math.ceil(box[2] + m * bw))), min(height, int(math.ceil(box[3] + m * bh)))
    return (x0, y0, x1, y1), min(1.0, cfg.face_px / max(bw, 1.0))


def _cut(gray: np.ndarray, roi: tuple[int, int, int, int], scale: float) -> np.ndarray:
    x0, y0, x1, y1 = roi
    image = gray[y0:y1, x0:x1]
    if scale < 1.0:
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _to_region(points: np.ndarray, roi: tuple[int, int, int, int], scale: float) -> np.ndarray:
    return ((points - np.array(roi[:2], np.float64)) * scale).astype(np.float32).reshape(-1, 1, 2)


def start(gray: np.ndarray, landmarks: np.ndarray, box: Box, score: float, cfg: FlowConfig) -> Optional[FlowState]:
    """A new anchor: the detector found ``box`` (``score``) and the predictor ``landmarks`` [68, 2] in ``gray``."""
    if not np.isfinite(landmarks).all():
        return None
    roi, scale = _region(box, gray.shape[1], gray.shape[0], cfg)
    pts = np.asarray(landmarks, np.float64)[STABLE_POINTS]
    return FlowState(image=_cut(gray, roi, scale), roi=roi, scale=scale, points=pts, anchor_points=pts,
                     anchor_box=tuple(float(v) for v in box), score=float(score))


def follow(gray: np.ndarray, landmarks: np.ndarray, state: FlowState, cfg: FlowConfig) -> Optional[FlowState]:
    """The state after a flow frame whose predictor gave ``landmarks`` (the anchor is kept)."""
    if not np.isfinite(landmarks).all():
        return None
    box = box_of(state, np.asarray(landmarks, np.float64)[STABLE_POINTS])
    if box is None:
        return None
    roi, scale = _region(box, gray.shape[1], gray.shape[0], cfg)
    return FlowState(image=_cut(gray, roi, scale), roi=roi, scale=scale,
                     points=np.asarray(landmarks, np.float64)[STABLE_POINTS], anchor_points=state.anchor_points,
                     anchor_box=state.anchor_box, score=state.score, since_anchor=state.since_anchor + 1)


def box_of(state: FlowState, points: np.ndarray) -> Optional[Box]:
    """The anchor box moved by the similarity that maps the anchor's points onto ``points`` [P, 2]."""
    m, _ = cv2.estimateAffinePartial2D(state.anchor_points.astype(np.float32), points.astype(np.float32),
                                       method=cv2.LMEDS)
    if m is None:
        return None
    x0, y0, x1, y1 = state.anchor_box
    k = math.hypot(m[0, 0], m[1, 0])  # the scale; the detector's boxes stay upright, so rotation is dropped
    cx, cy = m[:, :2] @ np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + m[:, 2]
    hw, hh = k * (x1 - x0) / 2, k * (y1 - y0) / 2
    return (float(cx - hw), float(cy - hh), float(cx + hw), float(cy + hh))


def track_box(gray: np.ndarray, state: Optional[FlowState], cfg: FlowConfig) -> Optional[Box]:
    """This frame's face box by flow from the previous frame, or None (anchor due, or the flow failed)."""
    if state is None or not cfg.enabled or state.since_anchor + 1 >= cfg.anchor_every:
        return None
    current = _cut(gray, state.roi, state.scale)
    if current.shape != state.image.shape:
        return None
    prev = _to_region(state.points, state.roi, state.scale)
    win = (cfg.window, cfg.window)
    nxt, ok, _ = cv2.calcOpticalFlowPyrLK(state.image, current, prev, None, winSize=win, maxLevel=cfg.levels)
    if nxt is None:
        return None
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(current, state.image, nxt, None, winSize=win, maxLevel=cfg.levels)
    error = np.linalg.norm((back - prev).reshape(-1, 2), axis=1)
    good = ok.ravel().astype(bool) & ok_back.ravel().astype(bool) & (error < cfg.max_error)
    if good.sum() < max(4, cfg.min_points * len(good)):
        return None
    moved = state.points.copy()
    moved[good] = nxt.reshape(-1, 2)[good] / state.scale + np.array(state.roi[:2])
    # points that did not track follow the others (the similarity fit below uses them all)
    if (~good).any():
        m, _ = cv2.estimateAffinePartial2D(state.points[good].astype(np.float32), moved[good].astype(np.float32),
                                           method=cv2.LMEDS)
        if m is None:
            return None
        moved[~good] = state.points[~good] @ m[:, :2].T + m[:, 2]
    return box_of(state, moved)
