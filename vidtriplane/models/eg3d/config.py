"""``EG3DConfig``: the EG3D generator's hyper-parameters (defaults: FFHQ-512 ``ffhq512-128``, as in ``eg3d:eg3d/train.py`` with the ``docs/models.md`` command)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from vidtriplane.models.eg3d.renderer import RenderSettings, Sampling
from vidtriplane.models.eg3d.synthesis import synthesis_num_ws


@dataclass(frozen=True)
class EG3DConfig:
    """Architecture and rendering settings; the defaults build the official FFHQ-512 model."""

    z_dim: int = 512
    """Latent z size."""
    w_dim: int = 512
    """Intermediate latent w size."""
    c_dim: int = 25
    """Camera label size (16 cam2world + 9 intrinsics)."""
    img_resolution: int = 512
    """Final (super-resolved) image size."""
    backbone_resolution: int = 256
    """Tri-plane size (the StyleGAN2 backbone's output resolution)."""
    plane_features: int = 32
    """Channels per plane (the backbone outputs 3x this)."""
    channel_base: int = 32768
    """Backbone channels at resolution r: min(channel_base // r, channel_max)."""
    channel_max: int = 512
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    decoder_hidden: int = 64
    """Hidden width of the OSG decoder MLP."""
    decoder_lr_multiplier: float = 1.0
    sr_channels: tuple[int, int] = (256, 128)
    """Output channels of the two super-resolution blocks."""
    sr_conv_clamp: float | None = 256.0
    """Activation clamp in the SR blocks (the official value, because sr_num_fp16_res > 0)."""
    sr_antialias: bool = True
    sr_fp16: bool = False
    """Run the SR blocks in float16 on CUDA like the official code (never on the CPU)."""
    sr_noise_mode: str = "none"
    c_scale: float = 1.0
    """Camera labels are multiplied by this before the mapping network."""
    c_gen_conditioning_zero: bool = False
    """Feed zeros instead of the camera to the mapping network."""
    neural_rendering_resolution: int = 128
    depth_resolution: int = 48
    """Coarse samples per ray (checkpoint setting; official inference scripts use 96)."""
    depth_resolution_importance: int = 48
    ray_start: float = 2.25
    ray_end: float = 3.3
    box_warp: float = 1.0
    avg_camera_radius: float = 2.7
    """Camera distance of the training poses (for callers building cameras)."""
    avg_camera_pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)
    """Look-at point of the training poses."""
    render_chunk_rays: int = 16384
    """Rays (summed over the batch) rendered at once; bounds memory, does not change results. 0 = all."""

    def __post_init__(self) -> None:
        if self.img_resolution != 4 * (self.img_resolution // 4):
            raise ValueError(f"img_resolution must be a multiple of 4, got {self.img_resolution}")
        synthesis_num_ws(self.backbone_resolution)  # validates the power of two
        if self.sr_noise_mode not in ("random", "const", "none"):
            raise ValueError(f"sr_noise_mode must be random/const/none, got {self.sr_noise_mode!r}")

    @property
    def num_ws(self) -> int:
        """Rows of ws (14 for a 256 backbone; the SR blocks reuse the last one)."""
        return synthesis_num_ws(self.backbone_resolution)

    @property
    def backbone_channels(self) -> int:
        """Backbone output channels (96 = 3 planes x 32)."""
        return 3 * self.plane_features

    @property
    def sr_input_resolution(self) -> int:
        """Feature-image size the SR expects (128); other rendering sizes are resized to it."""
        return self.img_resolution // 4

    def render_settings(self, *, sampling: Sampling = "deterministic", depth_samples: int | None = None,
                        importance_samples: int | None = None) -> RenderSettings:
        """The renderer settings, with optional per-call sample counts."""
        return RenderSettings(
            depth_resolution=self.depth_resolution if depth_samples is None else depth_samples,
            depth_resolution_importance=(self.depth_resolution_importance if importance_samples is None
                                         else importance_samples),
            ray_start=self.ray_start, ray_end=self.ray_end, box_warp=self.box_warp, sampling=sampling,
            chunk_rays=self.render_chunk_rays)

    @classmethod
    def tiny(cls) -> "EG3DConfig":
        """A small random-weight model for plumbing tests: 64 px planes (10 ws), 32 px rendering, 128 px
        output, 12 + 12 depth samples, few channels. Same code paths as the full model."""
        return cls(img_resolution=128, backbone_resolution=64, channel_base=2048, channel_max=64,
                   sr_channels=(32, 16), neural_rendering_resolution=32, depth_resolution=12,
                   depth_resolution_importance=12)

    def replace(self, **changes) -> "EG3DConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)
