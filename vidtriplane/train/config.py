"""Loss weights of TriPlaneNet training (``tpn:options/train_options.py``, ``tpn:options/train_options_v2.py``).

Imports nothing heavy: the CLI can build, print and validate it without torch.

    LossConfig.v1()   # pSp 1.0 MSE + 0.8 LPIPS + 0.1 ID; tri-plane 1.0 smooth-L1 + 0.1 LPIPS + 0.1 ID
    LossConfig.v2()   # tri-plane LPIPS 0.8, plus mirror terms (x 0.1) and the GAN terms

A weight of 0 switches a term off (it is neither computed nor reported).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class LossConfig:
    """Weights of every loss term. Defaults: v1 for the shared terms, v2 values for the v2-only terms."""

    l2_lambda_psp: float = 1.0
    """MSE between the pSp render (256) and the input."""
    lpips_lambda_psp: float = 0.8
    """LPIPS between the pSp render and the input."""
    id_lambda_psp: float = 0.1
    """ID loss (1 - cosine of ArcFace embeddings) between the pSp render and the input."""
    l1_lambda_triplane: float = 1.0
    """Smooth-L1 between the tri-plane render (256) and the input."""
    smooth_l1_beta: float = 1.0
    """Beta of the smooth-L1 terms (PyTorch's default)."""
    lpips_lambda_triplane: float = 0.1
    """LPIPS between the tri-plane render and the input (0.1 in v1, 0.8 in v2)."""
    id_lambda_triplane: float = 0.1
    """ID loss between the tri-plane render and the input."""

    mirror_lambda: float = 0.1
    """v2: weight of each branch's mirror loss (render at the mirrored camera vs the flipped input)."""
    l2_lambda_psp_mirror: float = 1.0
    """v2: confidence-weighted MSE of the pSp mirror render."""
    lpips_lambda_psp_mirror: float = 0.8
    """v2: LPIPS of the pSp mirror render."""
    id_lambda_psp_mirror: float = 0.1
    """v2: ID loss of the pSp mirror render."""
    l1_lambda_triplane_mirror: float = 1.0
    """v2: confidence-weighted smooth-L1 of the tri-plane mirror render."""
    lpips_lambda_triplane_mirror: float = 0.8
    """v2: LPIPS of the tri-plane mirror render."""
    id_lambda_triplane_mirror: float = 0.1
    """v2: ID loss of the tri-plane mirror render."""
    conf_eps: float = 1.0
    """v2: pixel losses of the mirror terms are divided by (confidence + conf_eps) (``EPS = 1``)."""

    adv_lambda: float = 0.005
    """v2: weight of the non-saturating generator loss on the tri-plane branch's renders."""
    r1_gamma: float = 10.0
    """v2: R1 penalty weight; the penalty is gamma / 2 * E||grad D(real)||^2 * r1_every (lazy regularisation)."""
    r1_every: int = 16
    """v2: apply the R1 penalty every this many discriminator steps."""

    def __post_init__(self) -> None:
        negative = [f.name for f in fields(self) if getattr(self, f.name) < 0]
        if negative:
            raise ValueError(f"loss weights must be >= 0; negative: {', '.join(negative)}")
        if self.r1_every < 1:
            raise ValueError(f"r1_every must be >= 1, got {self.r1_every}")
        if self.smooth_l1_beta <= 0 or self.conf_eps <= 0:
            raise ValueError("smooth_l1_beta and conf_eps must be > 0")

    @classmethod
    def v1(cls) -> "LossConfig":
        """TriPlaneNet v1 (the v2-only weights are unused by the v1 losses)."""
        return cls()

    @classmethod
    def v2(cls) -> "LossConfig":
        """TriPlaneNet v2: tri-plane LPIPS raised to 0.8."""
        return cls(lpips_lambda_triplane=0.8)

    def replace(self, **changes) -> "LossConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)


__all__ = ["LossConfig"]
