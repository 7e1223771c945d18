"""EG3D tri-plane generator (FFHQ-512 ``ffhq512-128``), pure PyTorch, official parameter names.

Public API::

    from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator, EG3DOutput

    cfg = EG3DConfig()              # FFHQ-512 defaults; EG3DConfig.tiny() for fast plumbing tests
    G = EG3DGenerator(cfg).eval()   # state_dict = the official TriPlaneGenerator's (176 entries)
    G.load_state_dict(sd, strict=True)      # or vidtriplane.models.state.load_strict(G, sd, what=...)

    ws = G.mapping(z, c, truncation_psi=1.0, truncation_cutoff=None)   # [B, 14, 512]
    planes = G.backbone_planes(ws, noise_mode="const")                  # [B, 96, 256, 256]
    out = G.synthesis(ws, c)                                            # -> EG3DOutput
    out = G.synthesis(ws, c, triplane_offsets=offsets)  # planes = backbone(ws) + offsets (TriPlaneNet v1)
    out = G.synthesis(ws, c, planes=planes)              # render given planes, skip the backbone (v2, caching)
    out = G.synthesis(ws, c, sampling="stochastic", generator=torch.Generator().manual_seed(0),
                      depth_samples=96, importance_samples=96)         # official inference sample counts

``c`` is the 25-number EG3D camera label [B, 25] (see ``vidtriplane.geometry.camera``).
``EG3DOutput`` always has the same fields: ``image`` [B, 3, 512, 512] (super-resolved, about [-1, 1]),
``image_raw`` [B, 3, 128, 128], ``image_depth`` [B, 1, 128, 128], ``feature_image`` [B, 32, 128, 128],
``weights_total`` [B, 1, 128, 128] (opacity per pixel), ``planes`` [B, 96, 256, 256] (what was rendered).

Sampling: ``"deterministic"`` (default) uses mid-interval coarse depths and u = linspace(0, 1) for the
importance samples (reproducible; the parity data's mode); ``"stochastic"`` is the official renderer's
random jitter (pass ``generator`` to make it reproducible). ``depth_samples``/``importance_samples``
default to the config (48/48, the checkpoint); the official TriPlaneNet inference uses 96/96.
``G.render(planes, c)`` runs only the volume rendering (no super-resolution) and returns per-pixel maps.
The renderer steps are pure functions in ``vidtriplane.models.eg3d.renderer``.

Speed: ``backend`` = ``"eager"`` (default, the reference), ``"compiled"``, ``"triton"`` or ``"auto"``
chooses the volume renderer (``vidtriplane.models.eg3d.backends``) and, for any but eager, the parts
``vidtriplane.models.compile.compile_network`` compiled; ``precision`` = ``"fp32"`` (default), ``"bf16"``
or ``"fp16"`` runs the backbone and the super-resolution under autocast (rendering stays float32)::

    out = G.synthesis(ws, c, backend="auto", precision="bf16")
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vidtriplane.models import precision as amp
from vidtriplane.models.compile import part
from vidtriplane.models.eg3d.backends import check_backend, render_rays_with
from vidtriplane.models.eg3d.config import EG3DConfig
from vidtriplane.models.eg3d.decoder import OSGDecoder
from vidtriplane.models.eg3d.renderer import SAMPLING_MODES, Sampling, ray_bundle
from vidtriplane.models.eg3d.superresolution import SuperResolution
from vidtriplane.models.eg3d.synthesis import Backbone


@dataclass(frozen=True)
class EG3DRender:
    """Volume rendering at the neural rendering resolution R (no super-resolution)."""

    feature_image: torch.Tensor  # [B, 32, R, R], channels 0-2 are the raw RGB
    depth: torch.Tensor  # [B, 1, R, R]
    weights_total: torch.Tensor  # [B, 1, R, R]


@dataclass(frozen=True)
class EG3DOutput:
    """Everything one ``EG3DGenerator.synthesis`` call produces."""

    image: torch.Tensor  # [B, 3, 512, 512] super-resolved image
    image_raw: torch.Tensor  # [B, 3, 128, 128] = feature_image[:, :3]
    image_depth: torch.Tensor  # [B, 1, 128, 128] expected ray depth
    feature_image: torch.Tensor  # [B, 32, 128, 128] rendered features (SR input)
    weights_total: torch.Tensor  # [B, 1, 128, 128] accumulated opacity
    planes: torch.Tensor  # [B, 96, 256, 256] the tri-planes that were rendered


class EG3DGenerator(nn.Module):
    """``backbone`` (StyleGAN2: synthesis + mapping), ``superresolution``, ``decoder`` (official names)."""

    def __init__(self, cfg: EG3DConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or EG3DConfig()
        self.cfg = cfg
        self.backbone = Backbone(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim,
                                 img_resolution=cfg.backbone_resolution, img_channels=cfg.backbone_channels,
                                 channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                 mapping_layers=cfg.mapping_layers, mapping_lr_multiplier=cfg.mapping_lr_multiplier)
        self.superresolution = SuperResolution(in_channels=cfg.plane_features, img_resolution=cfg.img_resolution,
                                               channels=cfg.sr_channels, w_dim=cfg.w_dim,
                                               conv_clamp=cfg.sr_conv_clamp, antialias=cfg.sr_antialias,
                                               use_fp16=cfg.sr_fp16)
        self.decoder = OSGDecoder(cfg.plane_features, hidden=cfg.decoder_hidden, out_features=cfg.plane_features,
                                  lr_multiplier=cfg.decoder_lr_multiplier)

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """z [B, z_dim], camera labels c [B, 25] -> ws [B, num_ws, w_dim]."""
        c = torch.zeros_like(c) if self.cfg.c_gen_conditioning_zero else c * self.cfg.c_scale
        return self.backbone.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    def backbone_planes(self, ws: torch.Tensor, noise_mode: str = "const", *, backend: str = "eager",
                        precision: str = "fp32") -> torch.Tensor:
        """ws -> tri-planes [B, 96, R, R] (3 planes x 32 channels, stacked along channels), float32."""
        return amp.run(precision, part(self.backbone.synthesis, backend), ws, noise_mode=noise_mode)

    def render(self, planes: torch.Tensor, c: torch.Tensor, *, sampling: Sampling = "deterministic",
               depth_samples: int | None = None, importance_samples: int | None = None,
               neural_rendering_resolution: int | None = None,
               generator: torch.Generator | None = None, backend: str = "eager",
               precision: str = "fp32") -> EG3DRender:
        """Volume-render planes [B, 96, H, W] from cameras c [B, 25] (no super-resolution), in float32
        with the ``backend`` renderer (``precision`` only picks the plane dtype the triton kernels read)."""
        cfg = self.cfg
        b = planes.shape[0]
        if planes.ndim != 4 or planes.shape[1] != cfg.backbone_channels:
            raise ValueError(f"planes must be [B, {cfg.backbone_channels}, H, W], got {list(planes.shape)}")
        if c.ndim != 2 or c.shape[0] != b or c.shape[1] != 25:
            raise ValueError(f"camera labels must be [{b}, 25] (one per plane set), got {list(c.shape)}")
        res = neural_rendering_resolution or cfg.neural_rendering_resolution
        settings = cfg.render_settings(sampling=sampling, depth_samples=depth_samples,
                                       importance_samples=importance_samples)
        # 1. rays, 2. render, 3. rays back to images (row-major)
        origins, dirs = ray_bundle(c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3), res)
        tri = planes.reshape(b, 3, cfg.plane_features, planes.shape[-2], planes.shape[-1])
        out = render_rays_with(backend, tri, self.decoder, origins, dirs, settings, generator=generator,
                               precision=precision)

        def image(t: torch.Tensor) -> torch.Tensor:
            return t.permute(0, 2, 1).reshape(b, t.shape[-1], res, res).contiguous()

        return EG3DRender(feature_image=image(out.features), depth=image(out.depth),
                          weights_total=image(out.weights_total))

    def synthesis(
        self,
        ws: torch.Tensor,
        c: torch.Tensor,
        triplane_offsets: torch.Tensor | None = None,
        planes: torch.Tensor | None = None,
        noise_mode: str = "const",
        sampling: Sampling = "deterministic",
        depth_samples: int | None = None,
        importance_samples: int | None = None,
        neural_rendering_resolution: int | None = None,
        generator: torch.Generator | None = None,
        backend: str = "eager",
        precision: str = "fp32",
    ) -> EG3DOutput:
        """Render ws [B, num_ws, w_dim] from cameras c [B, 25]. See the module docstring."""
        cfg = self.cfg
        # 0. validate everything before the expensive parts
        if ws.ndim != 3 or ws.shape[1:] != (cfg.num_ws, cfg.w_dim):
            raise ValueError(f"ws must be [B, {cfg.num_ws}, {cfg.w_dim}], got {list(ws.shape)}")
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        check_backend(backend)
        amp.check_precision(precision)
        if c.ndim != 2 or c.shape != (ws.shape[0], 25):
            raise ValueError(f"camera labels must be [{ws.shape[0]}, 25] (one per sample), got {list(c.shape)}")
        plane_shape = (ws.shape[0], cfg.backbone_channels, cfg.backbone_resolution, cfg.backbone_resolution)
        for name, t in (("planes", planes), ("triplane_offsets", triplane_offsets)):
            if t is not None and tuple(t.shape) != plane_shape:
                raise ValueError(f"{name} must be {list(plane_shape)}, got {list(t.shape)}")
        # 1. tri-planes: given, or from the backbone; plus optional offsets
        if planes is None:
            planes = self.backbone_planes(ws, noise_mode=noise_mode, backend=backend, precision=precision)
        if triplane_offsets is not None:
            planes = planes + triplane_offsets
        # 2. volume rendering
        r = self.render(planes, c, sampling=sampling, depth_samples=depth_samples,
                        importance_samples=importance_samples,
                        neural_rendering_resolution=neural_rendering_resolution, generator=generator,
                        backend=backend, precision=precision)
        # 3. super-resolution from the raw RGB and the features
        rgb = r.feature_image[:, :3]
        image = amp.run(precision, part(self.superresolution, backend), rgb, r.feature_image, ws,
                        noise_mode=self.cfg.sr_noise_mode)
        return EG3DOutput(image=image, image_raw=rgb, image_depth=r.depth, feature_image=r.feature_image,
                          weights_total=r.weights_total, planes=planes)

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, **synthesis_kwargs) -> EG3DOutput:
        """mapping + synthesis (camera c both conditions the mapping and renders)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, c, **synthesis_kwargs)


__all__ = ["EG3DConfig", "EG3DGenerator", "EG3DOutput", "EG3DRender"]
