"""The data that flows between pipeline stages.

``FrameBatch`` only grows: the reader fills the frame fields, each stage adds its own fields with
``batch.with_fields(name=value)`` (a new frozen object) and never rewrites another stage's fields.
Arrays are numpy on the CPU side (uint8 images HxWx3 RGB, float32 geometry); torch tensors appear only
in the inversion/render fields.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Optional

import numpy as np


@dataclass(frozen=True)
class VideoMeta:
    """What the reader knows about a video stream before decoding it."""

    width: int
    height: int
    fps: Fraction  # nominal (average) rate; timestamps are authoritative for VFR input
    time_base: Fraction
    n_frames: Optional[int] = None  # None when unknown (pipes)
    rotation: int = 0  # display-matrix rotation in degrees (0, 90, 180, 270), applied by the reader
    codec: str = ""
    pix_fmt: str = ""
    has_audio: bool = False
    source: str = ""  # path, or "-" for stdin


@dataclass(frozen=True)
class FrameBatch:
    """A batch of consecutive frames and everything the stages computed for them.

    Frame fields (reader):
      index  [N] int64   frame number in the input, from 0
      pts    [N] int64   presentation timestamps in ``meta.time_base`` units
      frames [N,H,W,3] uint8 RGB, display orientation

    Preprocessing fields (stages/*):
      landmarks   [N,P,2] float32 pixel coords in the frame (NaN where no face); P = 68 (dlib, iBUG order)
                  or 5 (MTCNN: left eye, right eye, nose, mouth left, mouth right)
      pose_landmarks [N,68,2] float32 landmarks for the head pose when they differ from ``landmarks``
                  (MTCNN's five points + dlib's 68 for the pose); None otherwise
      face_found  [N] bool  a face was detected/tracked in this very frame
      held        [N] bool  no face here; geometry held from an earlier frame
      confidence  [N] float32
      crop_matrix [N,2,3] float32 affine frame -> 512 crop (its inverse pastes back)
      crops       [N,512,512,3] uint8 aligned crops (background replaced when matting ran)
      alpha       [N,512,512] float32 matting alpha of the crops, in [0, 1]
      labels      [N,25] float32 EG3D camera labels of the crops

    Runtime field (pipeline/stream, before the stages):
      seconds     [N] float64 presentation time from the video's first frame (moving cameras use it)

    Inversion/render/composite fields (stages/invert, stages/render, stages/composite):
      inversion   the TriPlaneNet ``Inversion`` (torch tensors on the model's device) of these frames
      rendered    {view name: [N,S,S,3] uint8}; the input view is under ``"same"``
      outputs     {output name: [N,H,W,3] uint8} the frames each output video receives
      extras      free-form per-stage diagnostics (timings, counts)
    """

    meta: VideoMeta
    index: np.ndarray
    pts: np.ndarray
    frames: np.ndarray
    landmarks: Optional[np.ndarray] = None
    pose_landmarks: Optional[np.ndarray] = None
    face_found: Optional[np.ndarray] = None
    held: Optional[np.ndarray] = None
    confidence: Optional[np.ndarray] = None
    crop_matrix: Optional[np.ndarray] = None
    crops: Optional[np.ndarray] = None
    alpha: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    seconds: Optional[np.ndarray] = None
    inversion: Optional[Any] = None
    rendered: Optional[dict[str, np.ndarray]] = None
    outputs: Optional[dict[str, np.ndarray]] = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def with_fields(self, **values: Any) -> "FrameBatch":
        """A copy with new fields set; setting a field another stage already filled is an error."""
        for name, value in values.items():
            if name == "extras":
                continue
            if getattr(self, name) is not None:
                raise ValueError(f"FrameBatch.{name} is already set; stages add fields, never rewrite them")
        if "extras" in values:
            values = dict(values, extras={**self.extras, **values["extras"]})
        return dataclasses.replace(self, **values)

    def slice(self, start: int, stop: int) -> "FrameBatch":
        """Frames ``start:stop`` with every per-frame field sliced (the inversion is not carried over)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("meta", "extras") or value is None:
                continue
            if f.name == "inversion":
                values[f.name] = None
            elif isinstance(value, dict):
                values[f.name] = {k: v[start:stop] for k, v in value.items()}
            else:
                values[f.name] = value[start:stop]
        return dataclasses.replace(self, **values)
