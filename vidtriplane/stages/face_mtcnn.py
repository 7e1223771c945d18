"""MTCNN face detection (Zhang et al. 2016) as batched torch code: pyramid -> P-net -> R-net -> O-net.

    nets = checkpoints.load_mtcnn(resolve("mtcnn")).to(device)
    found = detect(nets, frames)            # frames: uint8 [N, H, W, 3] or [N, 3, H, W] 0..255
    found[0].boxes, found[0].scores, found[0].points   # [K, 4], [K], [K, 5, 2] for frame 0

The steps and constants are those of the original method as the ``mtcnn`` TensorFlow package
(ipazc/mtcnn ``mtcnn/mtcnn.py``, used by the official preprocessing ``batch_mtcnn.py``) runs it:

1. Pyramid: scales ``m * f^k`` with ``m = 12 / min_face`` and ``f = 0.709`` while the short side stays
   >= 12 px; each level is the frame area-resized to ``ceil(H s) x ceil(W s)`` (exact area averaging
   rounded to integers, as OpenCV's INTER_AREA on 8-bit images).
2. P-net on every level (all frames of the batch at once); a cell at (row i, column j) with face
   probability >= ``thresholds[0]`` proposes the 12x12 window at (2j, 2i) of the level, mapped back to the
   frame with MTCNN's integer rounding. NMS 0.5 per level and frame, then ``nms_thresholds[0]`` over all
   levels; box regression (with MTCNN's width ``x1 - x0 - 1`` at this stage); squared; truncated.
3. R-net on 24x24 crops (zero outside the frame): keep score > ``thresholds[1]``, NMS
   ``nms_thresholds[1]``, regress, square.
4. O-net on 48x48 crops of the truncated boxes: keep score > ``thresholds[2]``; landmarks from the crop
   box; regress; NMS ``nms_thresholds[2]`` measured over the smaller box ('Min').

Outputs are in frame pixel-centre coordinates (pixel ``i`` spans ``[i - 0.5, i + 0.5]``), like the other
landmark backends: MTCNN's own coordinates minus half a pixel, which is also what the official pipeline's
``int()`` of the landmarks does on average. Points are ordered left eye, right eye, nose, mouth left,
mouth right (image-left first).

Known differences from the TensorFlow original, all small: area resizes are computed in float32 (up to
~0.05 grey levels) and OpenCV's own INTER_AREA rounds its weights; the weights are
facenet-pytorch's conversion of the same Caffe models (float32 rounding); the original's mirrored
offsets when a level has exactly one candidate (a bug) are not reproduced.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from vidtriplane.geometry.boxes import area_resize, crop_resize, nms, regress, square, truncate
from vidtriplane.models.mtcnn import MTCNN, ONET_SIZE, PNET_CELL, PNET_STRIDE, RNET_SIZE, normalize

THRESHOLDS = (0.6, 0.7, 0.7)
"""P/R/O-net score thresholds of the ``mtcnn`` package (``steps_threshold``) and facenet-pytorch."""
NMS_THRESHOLDS = (0.7, 0.7, 0.7)
"""NMS after all pyramid levels, after R-net and after O-net ('Min' overlap for the last)."""
PER_LEVEL_NMS = 0.5
MIN_FACE = 20.0
SCALE_FACTOR = 0.709
ID_METRIC_THRESHOLDS = (0.15, 0.25, 0.35)
"""Thresholds of the ID-similarity metric's detector (TreB1eN's PyTorch MTCNN in ``metrics/metrics.py``,
with NMS 0.7 at every stage and min face 20)."""
HALF_PIXEL = 0.5  # MTCNN (pixel-edge) coordinates -> pixel-centre coordinates
BOX_DTYPE = torch.float64  # box arithmetic in double precision, like the NumPy original: its truncations of
# values near integers (np.fix) then agree


@dataclass(frozen=True)
class Detections:
    """Faces found in one image (or, from :func:`refine`, one face per given box)."""

    boxes: torch.Tensor
    """[K, 4] (x0, y0, x1, y1): the box's outer pixel edges, in pixel-centre coordinates."""
    scores: torch.Tensor
    """[K] O-net face probability."""
    points: torch.Tensor
    """[K, 5, 2] (x, y) of left eye, right eye, nose, mouth left, mouth right (image-left first)."""

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes, scores, points) as float32 numpy arrays."""
        return tuple(t.detach().cpu().float().numpy() for t in (self.boxes, self.scores, self.points))


def _writable(array: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable array (torch.from_numpy warns about read-only ones, e.g. from PIL)."""
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def as_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] (numpy or torch) or [N, 3, H, W] with values 0..255 -> float32 [N, 3, H, W].

    Stays on the input's device (numpy goes to the CPU).
    """
    x = torch.from_numpy(_writable(images)) if isinstance(images, np.ndarray) else images
    if x.ndim != 4:
        raise ValueError(f"expected a batch of images [N, H, W, 3] or [N, 3, H, W], got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8 and x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise ValueError(f"expected RGB images [N, H, W, 3] (uint8) or [N, 3, H, W], got shape {tuple(x.shape)}")
    return x.float()


def pyramid_scales(height: int, width: int, min_face: float = MIN_FACE, factor: float = SCALE_FACTOR) -> list[float]:
    """Scales of the image pyramid: 12 / min_face times factor^k while the short side stays >= 12 px."""
    if min_face <= 0 or not 0 < factor < 1:
        raise ValueError(f"need min_face > 0 and 0 < scale_factor < 1, got {min_face} and {factor}")
    m = PNET_CELL / min_face
    short = min(height, width) * m
    scales = []
    while short >= PNET_CELL:
        scales.append(m * factor ** len(scales))
        short *= factor
    return scales


def _empty(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    z = torch.zeros(0, dtype=BOX_DTYPE, device=device)
    return torch.zeros(0, dtype=torch.long, device=device), z.reshape(0, 4), z, z.reshape(0, 4)


def _proposals(nets: MTCNN, level: torch.Tensor, scale: float, threshold: float):
    """P-net windows of one pyramid level: (frame [K], boxes [K, 4] edge coords, scores [K], offsets [K, 4])."""
    out = nets.pnet(normalize(level))
    n, i, j = (out.scores >= threshold).nonzero(as_tuple=True)
    cell = torch.stack([j, i], dim=1).to(BOX_DTYPE)
    # MTCNN: 1-based corners fix((2c + 1) / s) and fix((2c + 12) / s); edge coordinates subtract 1 from the first
    first = torch.trunc((PNET_STRIDE * cell + 1) / scale) - 1
    last = torch.trunc((PNET_STRIDE * cell + PNET_CELL) / scale)
    boxes = torch.cat([first, last], dim=1)
    scores = out.scores[n, i, j]
    offsets = out.offsets.permute(0, 2, 3, 1)[n, i, j].to(BOX_DTYPE)
    keep = nms(boxes, scores, PER_LEVEL_NMS, groups=n)
    return n[keep], boxes[keep], scores[keep], offsets[keep]


def _stage1(nets: MTCNN, x: torch.Tensor, threshold: float, nms_threshold: float, min_face: float, factor: float):
    """Pyramid + P-net -> squared, truncated candidate boxes (frame [K], boxes [K, 4])."""
    scales = pyramid_scales(x.shape[2], x.shape[3], min_face, factor)
    sizes = [(math.ceil(x.shape[2] * s), math.ceil(x.shape[3] * s)) for s in scales]
    # the original resizes 8-bit images with OpenCV, which rounds the levels to integers
    levels = (level.round() for level in area_resize(x, sizes))
    parts = [_proposals(nets, level, s, threshold) for s, level in zip(scales, levels)]
    parts = [p for p in parts if len(p[0])] or [_empty(x.device)]
    frame, boxes, scores, offsets = (torch.cat(t) for t in zip(*parts))
    keep = nms(boxes, scores, nms_threshold, groups=frame)
    frame, boxes, offsets = frame[keep], boxes[keep], offsets[keep]
    boxes = regress(boxes, offsets, size_offset=-1.0)  # the original uses x1 - x0 - 1 at this stage only
    return frame, truncate(square(boxes))


def _stage2(nets: MTCNN, x: torch.Tensor, frame: torch.Tensor, boxes: torch.Tensor, threshold: float,
            nms_threshold: float):
    """R-net on 24x24 crops -> refined squared boxes."""
    out = nets.rnet(normalize(crop_resize(x, frame, boxes, RNET_SIZE)))
    ok = out.scores > threshold
    frame, boxes, scores, offsets = frame[ok], boxes[ok], out.scores[ok], out.offsets[ok].to(BOX_DTYPE)
    keep = nms(boxes, scores, nms_threshold, groups=frame)
    return frame[keep], square(regress(boxes[keep], offsets[keep]))


def _onet(nets: MTCNN, x: torch.Tensor, frame: torch.Tensor, boxes: torch.Tensor):
    """O-net on 48x48 crops of ``boxes`` (edge coords): (regressed boxes, scores, points [K, 5, 2])."""
    out = nets.onet(normalize(crop_resize(x, frame, boxes, ONET_SIZE)))
    size = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
    points = boxes[:, None, :2] + out.points.to(BOX_DTYPE).reshape(-1, 2, 5).transpose(1, 2) * size
    return regress(boxes, out.offsets.to(BOX_DTYPE)), out.scores, points


@torch.no_grad()
def detect(nets: MTCNN, images: np.ndarray | torch.Tensor, *, thresholds: Sequence[float] = THRESHOLDS,
           min_face: float = MIN_FACE, scale_factor: float = SCALE_FACTOR,
           nms_thresholds: Sequence[float] = NMS_THRESHOLDS) -> list[Detections]:
    """All faces in each image of a batch (one pyramid pass for the whole batch): one
    :class:`Detections` per image, faces sorted by decreasing score."""
    x = as_images(images).to(next(nets.parameters()).device)
    t_p, t_r, t_o = thresholds
    # 1-2. pyramid + P-net proposals
    frame, boxes = _stage1(nets, x, t_p, nms_thresholds[0], min_face, scale_factor)
    # 3. R-net
    if len(frame):
        frame, boxes = _stage2(nets, x, frame, boxes, t_r, nms_thresholds[1])
    # 4. O-net: score, landmarks, final boxes
    scores, points = boxes.new_zeros(0, dtype=torch.float32), boxes.new_zeros(0, 5, 2)
    if len(frame):
        boxes, scores, points = _onet(nets, x, frame, truncate(boxes))
        ok = scores > t_o
        frame, boxes, scores, points = frame[ok], boxes[ok], scores[ok], points[ok]
        keep = nms(boxes, scores, nms_thresholds[2], groups=frame, mode="min")
        frame, boxes, scores, points = frame[keep], boxes[keep], scores[keep], points[keep]
    out = []
    for n in range(x.shape[0]):
        sel = frame == n
        out.append(Detections((boxes[sel] - HALF_PIXEL).float(), scores[sel], (points[sel] - HALF_PIXEL).float()))
    return out


@torch.no_grad()
def refine(nets: MTCNN, images: np.ndarray | torch.Tensor, boxes: torch.Tensor, frame: torch.Tensor | None = None,
           *, passes: int = 2) -> Detections:
    """Re-run O-net on given face boxes (tracking without the pyramid): row k of the result is the face in
    ``boxes[k]`` of image ``frame[k]`` (default: image k).

    Each pass squares and truncates the box as detection does before O-net, then takes O-net's regressed
    box as the next pass's input, so a box that is off by a fraction of the face converges onto it.
    Boxes are in the pixel-centre coordinates of :class:`Detections`.
    """
    x = as_images(images).to(next(nets.parameters()).device)
    b = boxes.to(x.device, BOX_DTYPE) + HALF_PIXEL
    frame = torch.arange(len(b), device=x.device) if frame is None else frame.to(x.device)
    scores, points = b[:, 0], b[:, None, :2]
    for _ in range(max(1, passes)):
        b, scores, points = _onet(nets, x, frame, truncate(square(b)))
    return Detections((b - HALF_PIXEL).float(), scores, (points - HALF_PIXEL).float())
