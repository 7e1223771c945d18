"""The ``vidtriplane render`` configuration: which stages run and how, as frozen dataclasses.

``PipelineConfig`` is the whole resolved config of a render run; its sections are the stage configs
(``preprocess`` from :mod:`vidtriplane.config.preprocess`, ``input``/``output`` from
:mod:`vidtriplane.config.media`). Presets and named pipelines are resolved in
:mod:`vidtriplane.config.presets`. Nothing heavy is imported here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vidtriplane.config.media import ReaderConfig, WriterConfig
from vidtriplane.config.preprocess import PreprocessConfig

#: stage names a pipeline definition may list, in the only order data can flow
STAGES = ("preprocess", "aligned", "invert", "render", "composite")


@dataclass(frozen=True)
class ViewConfig:
    """One novel camera. Angles are radians, offsets from the frontal camera (official convention)."""

    name: str = "novel"
    """Output name of this view (used for separate outputs and the report)."""
    mode: Literal["absolute", "relative", "sway", "orbit"] = "absolute"
    """absolute: fixed yaw/pitch like the official inference; relative: each frame's own pose plus
    yaw/pitch; sway: yaw/pitch + amplitude_yaw*sin(2 pi t/period); orbit: sway in yaw and a cosine in
    pitch (the official orbit video)."""
    yaw: float = 0.3
    """Yaw (absolute or offset) in radians; > 0 moves the camera to the subject's left (+x)."""
    pitch: float = 0.0
    """Pitch (absolute or offset) in radians; > 0 moves the camera down."""
    amplitude_yaw: float = 0.35
    """sway/orbit: yaw amplitude in radians."""
    amplitude_pitch: float = 0.15
    """orbit: pitch amplitude in radians."""
    period: float = 4.0
    """sway/orbit: seconds per cycle (uses the frame timestamps, so VFR is handled)."""

    def __post_init__(self) -> None:
        if self.period <= 0:
            raise ValueError(f"view {self.name!r}: period must be > 0, got {self.period}")
        if not self.name or self.name == "same" or "/" in self.name:
            raise ValueError(f"view name {self.name!r} is reserved or invalid")


@dataclass(frozen=True)
class ModelConfig:
    """Which inversion network to build and where its weights come from."""

    weights: str = "registry"
    """registry: the official checkpoints from the weight registry (``vidtriplane weights fetch``);
    generated: deterministic random weights from ``seed`` - for tests and benchmarks only, the images
    are meaningless; or the path of a TriPlaneNet checkpoint in the official format (for example
    ``RUN_DIR/checkpoints/best.pt`` written by ``vidtriplane train``)."""
    size: Literal["full", "tiny"] = "full"
    """full: the official architecture; tiny: a narrow model for plumbing tests (generated weights only)."""
    version: int = 1
    """TriPlaneNet version (1 or 2)."""
    checkpoint: str = ""
    """Registry name of the TriPlaneNet checkpoint; empty = triplanenet-v1 / triplanenet-v2."""
    eg3d: str = "eg3d-ffhq512-128"
    """Registry name of the EG3D generator the checkpoint was trained with (gives latent_avg)."""
    seed: int = 0
    """Seed of generated weights."""

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"model.version must be 1 or 2, got {self.version}")
        if self.size == "tiny" and self.weights == "registry":
            raise ValueError("model.size=tiny only exists with model.weights=generated (or a checkpoint file "
                             "that holds a tiny model)")
        if not self.weights:
            raise ValueError("model.weights must be registry, generated or a checkpoint path")


@dataclass(frozen=True)
class InvertConfig:
    """Encoding each frame once (TriPlaneNet encoders)."""

    cttr_steps: int = 0
    """Cascaded test-time refinement passes (paper's CTTR; official flag = 1 pass). Costs one extra
    render + tri-plane encoder per pass."""

    def __post_init__(self) -> None:
        if self.cttr_steps < 0:
            raise ValueError(f"invert.cttr_steps must be >= 0, got {self.cttr_steps}")


@dataclass(frozen=True)
class RenderConfig:
    """Rendering the inversions from the novel cameras."""

    views: tuple[ViewConfig, ...] = (ViewConfig(),)
    """Novel cameras; all are rendered from one inversion per frame."""
    depth_samples: int = 96
    """Coarse samples per ray (official inference: 96; training: 48)."""
    importance_samples: int = 96
    """Importance (fine) samples per ray."""
    neural_rendering_resolution: int = 128
    """Volume-rendering resolution before super-resolution."""
    sampling: Literal["deterministic", "stochastic"] = "deterministic"
    """deterministic: no jitter between frames (no sampling flicker); stochastic: like training."""
    size: int = 512
    """Side of the rendered images that are passed on (512 = the generator's output)."""
    backend: Literal["eager", "compiled", "triton", "auto"] = "auto"
    """Volume rendering: eager (the reference code, parity-tested), compiled (a fused pure-PyTorch renderer
    through torch.compile; 2x eager on a CPU, 114 dB from it), triton (hand-written fused CUDA kernels; opt-in
    until measured on a GPU), auto (compiled). The first batch of a run pays the compile (cached on disk)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Encoders, generator backbone and super-resolution under autocast (ray compositing stays fp32):
    bf16 is 1.8x fp32 on a bf16 CPU with 42-46 dB against fp32; fp16 for GPUs."""
    compile_network: Literal["auto", "off", "default", "reduce-overhead", "max-autotune"] = "auto"
    """torch.compile of the encoders, backbone and super-resolution (static shapes per batch size; a part
    that fails to compile runs eagerly with one warning). auto: 'default' with a non-eager backend, else off;
    reduce-overhead adds CUDA graphs."""

    def __post_init__(self) -> None:
        if not self.views:
            raise ValueError("render.views must list at least one view")
        names = [v.name for v in self.views]
        if len(set(names)) != len(names):
            raise ValueError(f"render.views names must be unique, got {names}")
        if self.depth_samples < 2 or self.importance_samples < 0:
            raise ValueError("render.depth_samples must be >= 2 and render.importance_samples >= 0")


@dataclass(frozen=True)
class CompositeConfig:
    """How rendered views become output frames."""

    layout: Literal["crop", "side_by_side", "paste"] = "side_by_side"
    """crop: the novel view(s) only; side_by_side: input crop | same-view | novel view(s);
    paste: the same-view render pasted back into the full frame with the matting alpha."""
    views_output: Literal["grid", "separate"] = "grid"
    """Several views: one grid video, or one output per view (files only)."""
    tile: int = 512
    """Side of each tile in crop / side_by_side layouts."""
    paste_view: str = "same"
    """paste: which render is pasted ("same" or a view name)."""


@dataclass(frozen=True)
class RuntimeConfig:
    """Device, batching and streaming."""

    device: str = "auto"
    """auto (cuda if available), cpu, cuda, cuda:1, ..."""
    batch_size: int = 0
    """Frames per model batch; 0 = from free GPU memory (CUDA) or cpu_batch_size."""
    cpu_batch_size: int = 2
    """Automatic batch size on the CPU."""
    max_batch_size: int = 32
    """Upper bound of the automatic batch size."""
    gib_per_frame: float = 1.0
    """Estimated GPU memory per frame at 96+96 samples (scaled by the sample count) for auto batching
    (measured on an H100: 6.2 GiB peak for 8 frames, encode + one render)."""
    queue_size: int = 2
    """Batches buffered between threads (bounds memory whatever the video length)."""
    torch_threads: int = 0
    """CPU threads for torch; 0 = torch's default."""
    tf32: bool = True
    """CUDA: allow TF32 matrix products and convolutions: 1.5x faster on an H100 at batch 8 (README,
    Speed), images differ from float32 by at most 0.6 of an 8-bit level (mean 0.16, measured with
    benchmarks/gpu_models.py). false = strict float32, as the parity tests use."""
    pose_cache: bool = True
    """Reuse the preprocessing geometry of a file seen before (``$VIDTRIPLANE_CACHE/poses``)."""

    def __post_init__(self) -> None:
        if self.batch_size < 0 or self.cpu_batch_size < 1 or self.queue_size < 1:
            raise ValueError("runtime.batch_size >= 0, runtime.cpu_batch_size >= 1, runtime.queue_size >= 1")


@dataclass(frozen=True)
class AlignedConfig:
    """Camera assumed for pre-aligned input."""

    yaw: float = 0.0
    """Yaw of every input frame's camera (radians from frontal)."""
    pitch: float = 0.0
    """Pitch of every input frame's camera (radians)."""


@dataclass(frozen=True)
class PipelineConfig:
    """Everything ``vidtriplane render`` does, resolved from presets, files and flags."""

    name: str = "default"
    """Name of the pipeline definition this came from."""
    stages: tuple[str, ...] = ("preprocess", "invert", "render", "composite")
    """Stages in order: preprocess (face alignment, pose, matting) or aligned (input frames already
    are aligned 512 crops), then invert, render, composite."""
    input: ReaderConfig = ReaderConfig()
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    aligned: AlignedConfig = AlignedConfig()
    model: ModelConfig = ModelConfig()
    invert: InvertConfig = InvertConfig()
    render: RenderConfig = RenderConfig()
    composite: CompositeConfig = CompositeConfig()
    output: WriterConfig = WriterConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; known stages: {', '.join(STAGES)}")
        order = [STAGES.index(s) for s in self.stages]
        if order != sorted(order) or len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages must appear once each in the order {' -> '.join(STAGES)}")
        if ("preprocess" in self.stages) == ("aligned" in self.stages):
            raise ValueError("a pipeline needs exactly one of the stages 'preprocess' or 'aligned'")
        for stage in ("invert", "render", "composite"):
            if stage not in self.stages:
                raise ValueError(f"the render pipeline needs the {stage!r} stage")
        if self.composite.layout == "paste" and self.composite.views_output == "separate" and len(self.render.views) > 1:
            raise ValueError("composite.views_output=separate (--separate-views) does not apply to layout=paste, "
                             "which pastes one render (composite.paste_view); use layout crop or side_by_side")
        if self.composite.layout == "paste" and self.composite.paste_view != "same":
            if self.composite.paste_view not in {v.name for v in self.render.views}:
                raise ValueError(f"composite.paste_view {self.composite.paste_view!r} is not a view name")

    @property
    def crop_size(self) -> int:
        """Side of the aligned crops in pixels (``preprocess.align.out_size``; the aligned stage uses it too)."""
        return self.preprocess.align.out_size
