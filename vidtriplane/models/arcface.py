"""Face-recognition backbones for the ID loss and the ID metric (``tpn:criteria/id_loss.py``, ``tpn:metrics/metrics.py``).

* **ArcFace IR-SE-50** (TreB1eN InsightFace ``model_ir_se50.pth``), used by the training ID loss:
  ``tpn:criteria/id_loss.py`` builds ``Backbone(input_size=112, num_layers=50, drop_ratio=0.6,
  mode="ir_se")`` (``affine=True``, the class default).
* **CurricularFace IR-101** (``CurricularFace_Backbone.pth``), used by the ID metric:
  ``tpn:metrics/metrics.py`` builds ``IR_101(input_size=112)`` = ``Backbone(112, 100, mode="ir",
  drop_ratio=0.4, affine=False)`` (``tpn:models/encoders/model_irse.py``); the unit layout is the one of
  ``HuangYG123/CurricularFace: backbone/model_irse.py`` (plain IR units, stages 3/13/30/3).

Both are ``input_layer`` -> ``body`` (the IR units of :mod:`vidtriplane.models.encoders.irse`) ->
``output_layer`` = BN2d(512) -> Dropout -> Flatten -> Linear(512 * 7 * 7, 512) -> BN1d(512), then an
L2 normalisation (``x / ||x||``, no epsilon, like the official ``l2_norm``). The key names are the
official ones, so the published files load with ``load_state_dict(strict=True)``; with
``affine=False`` the last BatchNorm has only running statistics (no weight/bias keys).
Input: [B, 3, 112, 112] in [-1, 1]; output: [B, 512] unit vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vidtriplane.models.encoders.irse import STAGES_50, STAGES_100, make_body, make_input_layer


@dataclass(frozen=True)
class FaceEmbedderConfig:
    """Shape of an IR / IR-SE face-recognition backbone (defaults: ArcFace IR-SE-50 of the ID loss)."""

    stages: tuple[tuple[int, int], ...] = STAGES_50
    """(units, channel multiple of ``width``) per stage: ``STAGES_50`` or ``STAGES_100``."""
    se: bool = True
    """Squeeze-and-excitation gates in every unit (IR-SE); False = plain IR units."""
    width: int = 64
    """Channels of the first stage (64 in the published models; smaller for tiny test models)."""
    input_size: int = 112
    """Input resolution (the body divides it by 16: 7x7 at the output layer)."""
    embedding_dim: int = 512
    """Size of the embedding (the output Linear's width)."""
    dropout: float = 0.6
    """Dropout before the Linear layer (0.6 in the ID loss, 0.4 in IR_101); inactive in eval mode."""
    affine_output: bool = True
    """Whether the final BatchNorm1d has weight/bias (True for IR-SE-50, False for IR-101)."""

    def __post_init__(self) -> None:
        if self.input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {self.input_size}")

    @classmethod
    def ir_se50(cls) -> "FaceEmbedderConfig":
        """ArcFace IR-SE-50 (TreB1eN ``model_ir_se50.pth``) as the ID loss builds it."""
        return cls()

    @classmethod
    def ir101(cls) -> "FaceEmbedderConfig":
        """CurricularFace IR-101 (``CurricularFace_Backbone.pth``) as the ID metric builds it."""
        return cls(stages=STAGES_100, se=False, dropout=0.4, affine_output=False)

    @classmethod
    def tiny(cls, *, se: bool = True, affine_output: bool = True) -> "FaceEmbedderConfig":
        """Width 8, one unit per stage, 32-d embedding: same code paths, milliseconds on a CPU."""
        return cls(stages=((1, 1), (1, 2), (1, 4), (1, 8)), se=se, width=8, embedding_dim=32,
                   affine_output=affine_output)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x / ||x||_2`` along dim 1 (the official ``l2_norm``: no epsilon)."""
    return x / torch.norm(x, 2, 1, True)


class FaceEmbedder(nn.Module):
    """IR(-SE) backbone with its embedding head: [B, 3, S, S] in [-1, 1] -> [B, D] unit vectors."""

    def __init__(self, config: FaceEmbedderConfig = FaceEmbedderConfig()) -> None:
        super().__init__()
        self.config = config
        out_ch = config.width * config.stages[-1][1]
        side = config.input_size // 16
        self.input_layer = make_input_layer(3, config.width)
        self.body = make_body(config.width, stages=config.stages, se=config.se)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(out_ch),                                        # 0
            nn.Dropout(config.dropout),                                    # 1
            nn.Flatten(),                                                  # 2
            nn.Linear(out_ch * side * side, config.embedding_dim),        # 3
            nn.BatchNorm1d(config.embedding_dim, affine=config.affine_output),  # 4
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if x.ndim != 4 or x.shape[1:] != (3, size, size):
            raise ValueError(f"face embedder input must be [B, 3, {size}, {size}], got {list(x.shape)}")
        # 1. stem and IR units: [B, 512, 7, 7] for a 112 input
        x = self.body(self.input_layer(x))
        # 2. BN -> dropout -> flatten -> linear -> BN
        x = self.output_layer(x)
        # 3. unit length
        return l2_normalize(x)


__all__ = ["FaceEmbedder", "FaceEmbedderConfig", "l2_normalize"]
