"""TriPlaneNet v1 and v2: two-branch EG3D inversion, with encoding separated from rendering.

v1 (``tpn:models/triplanenet.py``):
1. ``codes = psp_encoder(x) + latent_avg`` (W+, [B, 14, 512]).
2. First-branch image ``y_psp`` = the codes rendered at the input camera, pooled to 256.
3. ``offsets = triplanenet_encoder(cat[y_psp, x - y_psp])``; planes = backbone(codes) + offsets.
4. CTTR (optional, ``cttr_steps`` times): render the input view with the current planes -> ``y1``,
   ``offsets = triplanenet_encoder(cat[y1, x - y1])`` (replaces the previous offsets; codes reused).

v2 (``tpn:models/triplanenet_v2.py``): the first branch is also rendered at the mirror camera, the encoder reads
``cat[y, x - y, x_mirror - y_mirror]`` plus the backbone planes and returns refined planes.

``encode`` runs the encoders once and returns an :class:`Inversion`; ``render`` draws it from any camera
without re-running the encoders or the generator backbone. ``forward`` is the official single-call
interface and always returns the final image tensor.

Both take ``backend`` (``eager`` = the reference, ``compiled``, ``triton``, ``auto``; see
``vidtriplane.models.eg3d.backends``) and ``precision`` (``fp32``, ``bf16``, ``fp16``: autocast of the
encoders, the backbone and the super-resolution) among their keyword arguments::

    inv = net.encode(x, c, backend="auto", precision="bf16")
    image = net.render(inv, c_novel, backend="auto", precision="bf16").image
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidtriplane.geometry.camera import flip_yaw
from vidtriplane.models import precision as amp
from vidtriplane.models.compile import part
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator, EG3DOutput
from vidtriplane.models.encoders.psp import GradualStyleEncoder, PSPConfig
from vidtriplane.models.encoders.triplane import TriPlaneEncoder, TriPlaneEncoderConfig, TriPlaneEncoderV2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inversion:
    """What the encoders computed for a batch; render it from any camera with ``net.render``."""

    codes: torch.Tensor
    """W+ codes [B, num_ws, w_dim] (latent_avg already added)."""
    planes: torch.Tensor
    """Tri-planes to render [B, 96, 256, 256]: backbone + offsets (v1) or the refined planes (v2)."""
    backbone_planes: torch.Tensor
    """The generator backbone's planes for ``codes`` [B, 96, 256, 256]."""
    offsets: torch.Tensor | None
    """v1: the (last) tri-plane offsets [B, 96, 256, 256]; v2: None (the encoder outputs planes)."""
    y_psp: torch.Tensor
    """First-branch image: the codes rendered at the input camera, pooled to the input size."""
    camera: torch.Tensor
    """Input-view camera labels [B, 25]."""
    cttr_steps: int = 0
    """Number of CTTR refinement passes that produced ``offsets`` (v1)."""


@dataclass(frozen=True)
class TriPlaneNetConfig:
    """Shapes of the three sub-modules of a TriPlaneNet (v1 or v2)."""

    psp: PSPConfig = PSPConfig()
    """First branch (pSp GradualStyleEncoder)."""
    encoder: TriPlaneEncoderConfig = TriPlaneEncoderConfig()
    """Second branch; ``in_channels`` 6 for v1, 9 for v2."""
    eg3d: EG3DConfig = field(default_factory=EG3DConfig)
    """The EG3D generator (``decoder``)."""

    @classmethod
    def v2(cls, variant: str = "pixelshuffle") -> "TriPlaneNetConfig":
        """Official v2 shapes with the given decoder variant (``pixelshuffle`` or ``upsample``)."""
        return cls(encoder=TriPlaneEncoderConfig.v2(variant))  # type: ignore[arg-type]

    @classmethod
    def tiny(cls, *, version: int = 1, variant: str = "pixelshuffle") -> "TriPlaneNetConfig":
        """Narrow encoders + ``EG3DConfig.tiny()`` (64 px planes, 10 ws) with the official key names, for
        fast plumbing tests. Inputs are then 64x64 images (the encoders work at the plane resolution)."""
        eg3d = EG3DConfig.tiny()
        psp = PSPConfig.tiny(style_dim=eg3d.w_dim, n_styles=eg3d.num_ws, input_size=eg3d.backbone_resolution)
        enc = TriPlaneEncoderConfig.tiny(in_channels=6 if version == 1 else 9,
                                         plane_channels=eg3d.backbone_channels, variant=variant)  # type: ignore[arg-type]
        return cls(psp=psp, encoder=enc, eg3d=eg3d)

    def validate(self, version: int) -> None:
        """Raise ValueError when the three parts do not fit together."""
        want_in = 6 if version == 1 else 9
        problems = []
        if self.encoder.in_channels != want_in:
            problems.append(f"TriPlaneNet v{version} needs a {want_in}-channel tri-plane encoder, "
                            f"got {self.encoder.in_channels}")
        if (self.psp.n_styles, self.psp.style_dim) != (self.eg3d.num_ws, self.eg3d.w_dim):
            problems.append(f"pSp gives [{self.psp.n_styles}, {self.psp.style_dim}] codes but the generator "
                            f"wants [{self.eg3d.num_ws}, {self.eg3d.w_dim}]")
        if self.encoder.plane_channels != self.eg3d.backbone_channels:
            problems.append(f"tri-plane encoder outputs {self.encoder.plane_channels} channels, the generator's "
                            f"planes have {self.eg3d.backbone_channels}")
        if self.psp.input_size != self.eg3d.backbone_resolution:
            problems.append(f"input size {self.psp.input_size} must equal the plane resolution "
                            f"{self.eg3d.backbone_resolution} (the tri-plane encoder keeps the input size)")
        if problems:
            raise ValueError("; ".join(problems))


def _speed_kwargs(synthesis_kwargs: dict[str, Any]) -> dict[str, str]:
    """The ``backend``/``precision`` among synthesis keyword arguments (they also pick the encoders' path)."""
    return {"backend": synthesis_kwargs.get("backend", "eager"), "precision": synthesis_kwargs.get("precision", "fp32")}


def pool_to(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Official resize: adaptive average pooling (an exact 2x2 box mean for 512 -> 256)."""
    return F.adaptive_avg_pool2d(image, size)


class _Inverter(nn.Module):
    """Shared parts: latent_avg handling, rendering an Inversion, the official ``forward``."""

    psp_encoder: GradualStyleEncoder
    decoder: EG3DGenerator

    def __init__(self) -> None:
        super().__init__()
        # Plain attribute, NOT a buffer: the official state_dict has no latent_avg entry.
        self.latent_avg: torch.Tensor | None = None
        self._warned_latent_avg = False

    def set_latent_avg(self, latent_avg: torch.Tensor) -> None:
        """Set the average latent from a [w_dim] vector (repeated to num_ws rows) or a [num_ws, w_dim] matrix."""
        num_ws = self.psp_encoder.config.n_styles
        w_dim = self.psp_encoder.config.style_dim
        avg = latent_avg.detach().float()
        if avg.ndim == 1:
            avg = avg.repeat(num_ws, 1)
        if tuple(avg.shape) != (num_ws, w_dim):
            raise ValueError(f"latent_avg must be [{w_dim}] or [{num_ws}, {w_dim}], got {list(latent_avg.shape)}")
        self.latent_avg = avg

    def average_latent(self) -> torch.Tensor:
        """[num_ws, w_dim]: ``latent_avg`` if set, else the generator's ``mapping.w_avg`` repeated."""
        if self.latent_avg is not None:
            return self.latent_avg
        if not self._warned_latent_avg:
            log.info("latent_avg not given: using decoder.backbone.mapping.w_avg repeated to %d rows",
                     self.psp_encoder.config.n_styles)
            self._warned_latent_avg = True
        w_avg = self.decoder.backbone.mapping.w_avg.detach()
        return w_avg.repeat(self.psp_encoder.config.n_styles, 1)

    def encode_codes(self, x: torch.Tensor, *, backend: str = "eager", precision: str = "fp32") -> torch.Tensor:
        """W+ codes of the first branch: ``psp_encoder(x) + latent_avg`` [B, num_ws, w_dim]."""
        codes = amp.run(precision, part(self.psp_encoder, backend), x)
        return codes + self.average_latent().to(device=codes.device, dtype=codes.dtype)

    def render(self, inv: Inversion, camera: torch.Tensor, **synthesis_kwargs: Any) -> EG3DOutput:
        """Render an inversion from ``camera`` ([B, 25], or one [25] / [1, 25] label for the whole batch);
        the encoders and the generator backbone do not run."""
        synthesis_kwargs.setdefault("noise_mode", "const")
        batch = inv.codes.shape[0]
        camera = camera.reshape(-1, camera.shape[-1])
        if camera.shape[0] == 1 and batch > 1:
            camera = camera.expand(batch, -1)
        return self.decoder.synthesis(inv.codes, camera, planes=inv.planes, **synthesis_kwargs)

    def encode(self, x: torch.Tensor, c: torch.Tensor, **kwargs: Any) -> Inversion:  # pragma: no cover
        raise NotImplementedError

    def forward_encode_kwargs(self, cttr: bool, x_mirror: torch.Tensor | None,
                              c_mirror: torch.Tensor | None) -> dict[str, Any]:  # pragma: no cover
        """The version-specific ``encode`` arguments of :meth:`forward`."""
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        c_novel: torch.Tensor | None = None,
        cttr: bool = False,
        resize: bool = True,
        *,
        x_mirror: torch.Tensor | None = None,
        c_mirror: torch.Tensor | None = None,
        **synthesis_kwargs: Any,
    ) -> torch.Tensor:
        """Official single call: the final image at ``c_novel`` (default ``c``), pooled to the input size
        when ``resize``. ``cttr`` runs one CTTR refinement pass (v1); v2's mirror image and camera default to
        the flipped input (official v2 dataset)."""
        inv = self.encode(x, c, **self.forward_encode_kwargs(cttr, x_mirror, c_mirror), **synthesis_kwargs)
        image = self.render(inv, c if c_novel is None else c_novel, **synthesis_kwargs).image
        return pool_to(image, tuple(x.shape[-2:])) if resize else image


class TriPlaneNet(_Inverter):
    """TriPlaneNet v1: ``psp_encoder``, ``triplanenet_encoder``, ``decoder`` (1182 state_dict keys)."""

    def __init__(self, config: TriPlaneNetConfig = TriPlaneNetConfig()) -> None:
        super().__init__()
        config.validate(version=1)
        self.config = config
        self.psp_encoder = GradualStyleEncoder(config.psp)
        self.triplanenet_encoder = TriPlaneEncoder(config.encoder)
        self.decoder = EG3DGenerator(config.eg3d)
        self.decoder.eval().requires_grad_(False)

    def forward_encode_kwargs(self, cttr: bool, x_mirror: torch.Tensor | None,
                              c_mirror: torch.Tensor | None) -> dict[str, Any]:
        return {"cttr_steps": 1 if cttr else 0}

    def refine(self, x: torch.Tensor, y: torch.Tensor, *, backend: str = "eager", precision: str = "fp32") -> torch.Tensor:
        """Tri-plane offsets from the input and a rendering of the current estimate (both [B, 3, H, W])."""
        x, y = x.detach(), y.detach()
        return amp.run(precision, part(self.triplanenet_encoder, backend), torch.cat([y, x - y], dim=1))

    def encode(self, x: torch.Tensor, c: torch.Tensor, *, cttr_steps: int = 0, **synthesis_kwargs: Any) -> Inversion:
        """Run both branches once (plus ``cttr_steps`` CTTR passes) for images x [B, 3, 256, 256] at cameras c."""
        if cttr_steps < 0:
            raise ValueError(f"cttr_steps must be >= 0, got {cttr_steps}")
        synthesis_kwargs.setdefault("noise_mode", "const")
        fast = _speed_kwargs(synthesis_kwargs)
        size = tuple(x.shape[-2:])
        # 1. W+ codes and the backbone planes they give (computed once, reused by every render).
        codes = self.encode_codes(x, **fast)
        backbone = self.decoder.backbone_planes(codes, noise_mode=synthesis_kwargs["noise_mode"], **fast)
        # 2. First-branch image at the input view.
        y_psp = pool_to(self.decoder.synthesis(codes, c, planes=backbone, **synthesis_kwargs).image, size)
        # 3. Second branch: offsets from [y, x - y] (detached inputs, as in the official code).
        codes = codes.detach()
        offsets = self.refine(x, y_psp, **fast)
        inv = Inversion(codes=codes, planes=backbone + offsets, backbone_planes=backbone, offsets=offsets,
                        y_psp=y_psp, camera=c)
        # 4. CTTR passes.
        for _ in range(cttr_steps):
            inv = self.cttr_step(inv, x, **synthesis_kwargs)
        return inv

    def cttr_step(self, inv: Inversion, x: torch.Tensor, input_view_image: torch.Tensor | None = None,
                  **synthesis_kwargs: Any) -> Inversion:
        """One cascaded test-time refinement pass: render the input view with the current planes (or take
        ``input_view_image``, that rendering at full size, when the caller already has it), pool it to the
        input size -> y1, and predict new offsets from ``[y1, x - y1]``. The new offsets REPLACE the old
        ones; the codes are reused."""
        if inv.offsets is None:
            raise ValueError("cttr_step needs a v1 inversion (with offsets)")
        if input_view_image is None:
            input_view_image = self.render(inv, inv.camera, **synthesis_kwargs).image
        y1 = pool_to(input_view_image, tuple(x.shape[-2:]))
        offsets = self.refine(x, y1, **_speed_kwargs(synthesis_kwargs))
        return replace(inv, planes=inv.backbone_planes + offsets, offsets=offsets, cttr_steps=inv.cttr_steps + 1)


class TriPlaneNetV2(_Inverter):
    """TriPlaneNet v2: mirrored input and camera, a 9-channel encoder that outputs refined tri-planes."""

    def __init__(self, config: TriPlaneNetConfig = TriPlaneNetConfig.v2()) -> None:
        super().__init__()
        config.validate(version=2)
        self.config = config
        self.psp_encoder = GradualStyleEncoder(config.psp)
        self.triplanenet_encoder = TriPlaneEncoderV2(config.encoder)
        self.decoder = EG3DGenerator(config.eg3d)
        self.decoder.eval().requires_grad_(False)

    def encode(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        *,
        cttr_steps: int = 0,
        x_mirror: torch.Tensor | None = None,
        c_mirror: torch.Tensor | None = None,
        **synthesis_kwargs: Any,
    ) -> Inversion:
        """Invert x [B, 3, 256, 256] at cameras c; the mirror image/camera default to the flipped ones."""
        if cttr_steps:
            raise ValueError("CTTR is defined for TriPlaneNet v1 only; use cttr_steps=0 with v2")
        synthesis_kwargs.setdefault("noise_mode", "const")
        fast = _speed_kwargs(synthesis_kwargs)
        size = tuple(x.shape[-2:])
        x_mirror = x.flip(-1) if x_mirror is None else x_mirror
        c_mirror = flip_yaw(c) if c_mirror is None else c_mirror
        # 1. W+ codes and backbone planes.
        codes = self.encode_codes(x, **fast)
        backbone = self.decoder.backbone_planes(codes, noise_mode=synthesis_kwargs["noise_mode"], **fast)
        # 2. First branch rendered at the input and at the mirror camera.
        y = pool_to(self.decoder.synthesis(codes, c, planes=backbone, **synthesis_kwargs).image, size)
        y_m = pool_to(self.decoder.synthesis(codes, c_mirror, planes=backbone, **synthesis_kwargs).image, size)
        # 3. Refined planes from the 9-channel input and the (detached) backbone planes.
        codes, y, y_m, backbone = codes.detach(), y.detach(), y_m.detach(), backbone.detach()
        inp = torch.cat([y, x.detach() - y, x_mirror.detach() - y_m], dim=1)
        planes = amp.run(fast["precision"], part(self.triplanenet_encoder, fast["backend"]), inp, backbone)
        return Inversion(codes=codes, planes=planes, backbone_planes=backbone, offsets=None, y_psp=y, camera=c)

    def forward_encode_kwargs(self, cttr: bool, x_mirror: torch.Tensor | None,
                              c_mirror: torch.Tensor | None) -> dict[str, Any]:
        if cttr:
            raise ValueError("CTTR is defined for TriPlaneNet v1 only")
        return {"x_mirror": x_mirror, "c_mirror": c_mirror}


__all__ = ["Inversion", "TriPlaneNet", "TriPlaneNetConfig", "TriPlaneNetV2", "pool_to"]
