"""The MTCNN landmark backend for video: full detection on key frames, O-net tracking in between.

Per batch (all network calls batched over frames, on the device the networks are on):

1. Scene cuts: a frame whose 16x16 thumbnail differs from the previous frame's by more than
   ``scene_cut`` (mean absolute difference, 0..1) drops the tracked face.
2. Full MTCNN detection (pyramid + P/R/O-net) on a frame with no tracked face, at a cut, and every
   ``detect_every`` frames when that is > 0. The face kept is the one that overlaps the previously
   tracked face most (so a second face does not steal the track) or, with none, the official choice of
   ``batch_mtcnn.py``: the largest box (width + height), kept only if its confidence is > ``min_confidence``.
   When a frame without a track has no face, the rest of the batch is detected in one call.
3. Tracking: the frames up to the next key frame or cut are refined together by O-net alone, starting
   from the last face's box (two passes, see :func:`~vidtriplane.stages.face_mtcnn.refine`). At the first
   frame whose score falls below ``min_confidence`` the run is retried from the previous frame's box;
   if that also fails the face is lost and that frame is detected at once. Because a run starts every
   frame from the same box, where batches split changes the points by about a pixel (O-net's own jitter
   for a box moved by a few percent).

Landmarks are MTCNN's five points [N, 5, 2] (left eye, right eye, nose, mouth left, mouth right) in
pixel-centre coordinates; the confidence is O-net's face probability. Each frame's step is named as the
dlib tracker names its own (:attr:`~vidtriplane.stages.landmarks.LandmarkState.step`): 'detect' / 'redetect'
(full detection without / with a face followed up to this frame), 'track' (O-net from the last box).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from vidtriplane.geometry.boxes import overlap
from vidtriplane.stages import face_mtcnn
from vidtriplane.stages.landmarks import to_gray

THUMB = 16  # side of the scene-cut thumbnails
# Box for dlib's 68-point predictor from the five points: dlib's HOG detector boxes on 24 views of two faces
# (turned, rolled, scaled, mirrored) are centred 0.02 d above the points' mean and 2.35 d wide, d being the
# eye-centre to mouth-centre distance (spread of the measured values: 0.16 d and 0.2 d).
POSE_BOX_SHIFT = -0.02
POSE_BOX_SIDE = 2.35
MIN_KEEP_OVERLAP = 0.2  # a detection continues the track when its IoU with the last face exceeds this


def frames_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 frames [N, H, W, 3] (or grey [N, H, W] / [N, H, W, 1]) -> float [N, 3, H, W] on ``device``."""
    x = torch.from_numpy(face_mtcnn._writable(frames)).to(device)
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[-1] == 1:
        x = x.expand(-1, -1, -1, 3)
    return x[..., :3].permute(0, 3, 1, 2).float()


def scene_cuts(x: torch.Tensor, previous: Optional[np.ndarray], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut flags [N] (frame i differs from frame i - 1 by more than ``threshold``) and the last thumbnail."""
    thumbs = F.interpolate(x, size=(THUMB, THUMB), mode="area") / 255.0
    if previous is not None:
        thumbs = torch.cat([torch.from_numpy(previous).to(thumbs)[None], thumbs])
    diffs = (thumbs[1:] - thumbs[:-1]).abs().mean(dim=(1, 2, 3)).cpu().numpy()
    cuts = np.zeros(x.shape[0], dtype=bool)
    cuts[x.shape[0] - len(diffs):] = diffs > threshold
    return cuts, thumbs[-1].cpu().numpy()


def pick_face(found: face_mtcnn.Detections, previous: Optional[torch.Tensor], min_confidence: float) -> Optional[int]:
    """Index of the face to keep in one frame's detections, or None.

    With a previous face box: the confident detection that overlaps it most (IoU > 0.2). Without one, or
    when none overlaps: the largest box (width + height), kept if its confidence is > ``min_confidence``
    (the official ``batch_mtcnn.py`` rule).
    """
    if len(found) == 0:
        return None
    if previous is not None:
        ious = overlap(previous[None].to(found.boxes), found.boxes)[0]
        ious = torch.where(found.scores > min_confidence, ious, torch.zeros_like(ious))
        best = int(ious.argmax())
        if float(ious[best]) > MIN_KEEP_OVERLAP:
            return best
    size = (found.boxes[:, 2] - found.boxes[:, 0]) + (found.boxes[:, 3] - found.boxes[:, 1])
    largest = int(size.argmax())
    return largest if float(found.scores[largest]) > min_confidence else None


class _Walk:
    """Per-batch bookkeeping: results so far and the face being followed."""

    def __init__(self, n: int, box: Optional[torch.Tensor], tracking: bool, since: int) -> None:
        self.points = np.full((n, 5, 2), np.nan, dtype=np.float32)
        self.conf = np.zeros(n, dtype=np.float32)
        self.steps = ["detect"] * n
        self.box = box  # last face box (pixel-centre coordinates); kept after a loss to prefer that face again
        self.tracking = tracking and box is not None  # the face was found in the previous frame
        self.lost = False  # O-net lost the face at the frame about to be detected
        self.since = since  # frames since the last full detection

    def detecting(self, i: int) -> None:
        """Frame i gets a full detection: 'redetect' while a face is (or was just) followed."""
        self.steps[i] = "redetect" if self.tracking or self.lost else "detect"
        self.lost = False

    def accept(self, i: int, box: torch.Tensor, score: float, points: torch.Tensor, detected: bool) -> None:
        self.points[i] = points.detach().cpu().numpy()
        self.conf[i] = score
        self.box, self.tracking = box.detach().clone(), True
        self.since = 0 if detected else self.since + 1
        if not detected:
            self.steps[i] = "track"

    def miss(self) -> None:
        self.tracking, self.since = False, 0


def _key_frame(walk: _Walk, cut: bool, every: int) -> bool:
    return not walk.tracking or cut or (every > 0 and walk.since >= every)


def _detect_from(x, i, walk, cuts, nets, cfg) -> int:
    """Full detection at frame i (and, if it finds no face without a track, on the rest of the batch).
    Returns the next frame to handle."""
    m = cfg.mtcnn
    kwargs = dict(thresholds=m.thresholds, min_face=m.min_face, scale_factor=m.scale_factor)
    walk.detecting(i)
    found = face_mtcnn.detect(nets, x[i:i + 1], **kwargs)
    k = pick_face(found[0], walk.box, m.min_confidence)
    if k is not None:
        d = found[0]
        walk.accept(i, d.boxes[k], float(d.scores[k]), d.points[k], detected=True)
        return i + 1
    walk.miss()
    if i + 1 >= x.shape[0]:
        return i + 1
    # no face here: the following frames most likely need full detection too, so do them in one call
    rest = face_mtcnn.detect(nets, x[i + 1:], **kwargs)
    for j, d in enumerate(rest, start=i + 1):
        if cuts[j]:
            walk.box = None
        walk.detecting(j)
        k = pick_face(d, walk.box, m.min_confidence)
        if k is None:
            walk.miss()
        else:
            walk.accept(j, d.boxes[k], float(d.scores[k]), d.points[k], detected=True)
    return x.shape[0]


def _track_run(x, start, end, walk, nets, cfg) -> int:
    """O-net tracking of frames start..end-1 from the followed box; returns the first frame not accepted."""
    m = cfg.mtcnn
    retried = False
    anchor_at = start - 1
    i = start
    while i < end:
        anchors = walk.box[None].expand(end - i, 4)
        out = face_mtcnn.refine(nets, x[i:end], anchors)
        ok = (out.scores > m.min_confidence).cpu().numpy()
        bad = int(np.argmin(ok)) if not ok.all() else end - i
        for j in range(bad):
            walk.accept(i + j, out.boxes[j], float(out.scores[j]), out.points[j], detected=False)
        i += bad
        if i >= end:
            return end
        if retried or i - 1 == anchor_at:
            walk.miss()  # lost even from the previous frame's box: detect at once
            walk.lost = True
            return i
        retried, anchor_at = True, i - 1  # retry from the last accepted frame's box
    return end


def pose_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """A dlib-detector-like square (x0, y0, x1, y1) around a face from its five points [5, 2]."""
    eyes, mouth = points[:2].mean(0), points[3:].mean(0)
    down = mouth - eyes
    dist = float(np.linalg.norm(down))
    centre = points.mean(0) + POSE_BOX_SHIFT * down
    half = POSE_BOX_SIDE * dist / 2
    return (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)


def pose_landmarks(frames: np.ndarray, points: np.ndarray, model) -> np.ndarray:
    """68 points [N, 68, 2] from a 68-point model (``landmarks(gray, box)``) in :func:`pose_box` of each
    frame's five points; NaN where there is no face."""
    out = np.full((len(points), 68, 2), np.nan, dtype=np.float32)
    for i, p in enumerate(points):
        if np.isfinite(p).all():
            out[i] = model.landmarks(to_gray(frames[i]), pose_box(p.astype(np.float64)))
    return out


@torch.no_grad()
def track_batch(frames: np.ndarray, state, nets, cfg) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], object]:
    """Five landmarks [N, 5, 2] (NaN without a face), confidences [N], each frame's step and the new
    ``LandmarkState``."""
    device = next(nets.parameters()).device
    x = frames_tensor(frames, device)
    n = x.shape[0]
    cuts, thumb = scene_cuts(x, state.thumb, cfg.mtcnn.scene_cut)
    box = torch.tensor(state.box, dtype=torch.float32, device=device) if state.box is not None else None
    walk = _Walk(n, box, state.tracking, state.since_detect)
    i = 0
    while i < n:
        if cuts[i]:
            walk.box, walk.tracking = None, False
        if _key_frame(walk, bool(cuts[i]), cfg.detect_every):
            i = _detect_from(x, i, walk, cuts, nets, cfg)
            continue
        end = i + 1
        while end < n and not cuts[end]:
            end += 1
        if cfg.detect_every > 0:  # stop where the next key frame is due
            end = min(end, i + cfg.detect_every - walk.since)
        i = _track_run(x, i, end, walk, nets, cfg)
    box_out = tuple(float(v) for v in walk.box.cpu()) if walk.box is not None else None
    new_state = replace(state, box=box_out, tracking=walk.tracking, since_detect=walk.since, thumb=thumb,
                        flow=None, step=walk.steps[-1])
    return walk.points, walk.conf, tuple(walk.steps), new_state
