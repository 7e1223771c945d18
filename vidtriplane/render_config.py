"""The ``render`` configuration: frozen dataclasses, YAML presets (``configs/``) and named pipelines
(``pipelines/``).

Resolution order (later wins): dataclass defaults -> the pipeline's presets -> the pipeline's own
``set`` mapping -> ``--config`` files -> command-line flags -> ``--set key=value``.

    cfg = resolve_config(pipeline="default", config_files=["my.yaml"], overrides=["render.depth_samples=48"])
    print(dump(cfg))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

from vidtriplane.config import ConfigError, apply_overrides, from_mapping, load_yaml, merge, to_mapping
from vidtriplane.io.reader import ReaderConfig
from vidtriplane.io.writer import WriterConfig
from vidtriplane.stages.aligned import AlignedConfig
from vidtriplane.stages.preprocess import PreprocessConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
# A checkout (editable install) reads the top-level folders; an installed wheel carries copies under
# vidtriplane/_presets (symbolic links in the repository, resolved to files when the wheel is built).
_PRESETS = Path(__file__).resolve().parent / "_presets"
CONFIG_DIR = REPO_ROOT / "configs" if (REPO_ROOT / "configs").is_dir() else _PRESETS / "configs"
PIPELINE_DIR = REPO_ROOT / "pipelines" if (REPO_ROOT / "pipelines").is_dir() else _PRESETS / "pipelines"

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

    weights: Literal["registry", "generated"] = "registry"
    """registry: the official checkpoints from the weight registry (``vidtriplane weights fetch``);
    generated: deterministic random weights from ``seed`` - for tests and benchmarks only, the images
    are meaningless."""
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
        if self.size == "tiny" and self.weights != "generated":
            raise ValueError("model.size=tiny only exists with model.weights=generated")


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
    backend: Literal["eager", "compiled", "triton", "auto"] = "eager"
    """Model execution: eager (the reference), compiled (torch.compile'd renderer), triton (fused CUDA
    kernels), auto (triton on CUDA when installed, else compiled)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Encoders, generator backbone and super-resolution under autocast (ray compositing stays fp32)."""

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
        if self.composite.layout == "paste" and self.composite.paste_view != "same":
            if self.composite.paste_view not in {v.name for v in self.render.views}:
                raise ValueError(f"composite.paste_view {self.composite.paste_view!r} is not a view name")


# --------------------------------------------------------------------------------------------------
# presets and pipeline definitions


def available(folder: Path) -> list[str]:
    """Names (file stems) of the YAML files in ``folder``."""
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _preset_path(name: str | Path, folder: Path, what: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = folder / f"{name}.yaml"
    if candidate.exists():
        return candidate
    raise ConfigError(f"no {what} named {str(name)!r}; available: {', '.join(available(folder)) or 'none'}"
                      f" (or pass a path to a .yaml file)")


def load_pipeline(name: str | Path) -> dict[str, Any]:
    """A pipeline definition (``pipelines/NAME.yaml`` or a path) as a config mapping.

    A definition has ``description``, ``stages``, ``presets`` (names in ``configs/``) and ``set`` (a
    nested mapping applied after the presets).
    """
    path = _preset_path(name, PIPELINE_DIR, "pipeline")
    spec = load_yaml(path)
    unknown = sorted(set(spec) - {"description", "stages", "presets", "set"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; a pipeline has description, stages, presets, set")
    data: dict[str, Any] = {"name": Path(name).stem}
    for preset in spec.get("presets") or []:
        data = merge(data, load_yaml(_preset_path(preset, CONFIG_DIR, "preset")))
    data = merge(data, spec.get("set") or {})
    if "stages" in spec:
        data["stages"] = list(spec["stages"])
    return data


def resolve_config(
    *,
    pipeline: str | Path = "default",
    config_files: Sequence[str | Path] = (),
    flags: Optional[Mapping[str, Any]] = None,
    overrides: Sequence[str] = (),
) -> PipelineConfig:
    """Build the final config (see the module docstring for the order)."""
    data = load_pipeline(pipeline)
    for path in config_files:
        data = merge(data, load_yaml(_preset_path(path, CONFIG_DIR, "config")))
    if flags:
        data = merge(data, flags)
    cfg = from_mapping(PipelineConfig, data)
    return apply_overrides(cfg, list(overrides)) if overrides else cfg


def config_dict(cfg: PipelineConfig) -> dict[str, Any]:
    """Plain mapping of a config (for JSON reports and the saved config)."""
    return to_mapping(cfg)
