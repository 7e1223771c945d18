"""LPIPS v0.1 with AlexNet features (``tpn:criteria/lpips/``; Zhang et al. 2018, eq. 1).

``d(x, y) = sum_l mean_{h,w} || w_l * (n(F_l(x)) - n(F_l(y))) ||^2`` where ``F_l`` are AlexNet's
ReLU outputs 1-5 (64, 192, 384, 256, 256 channels) on inputs shifted/scaled by
mean (-0.030, -0.088, -0.188) / std (0.458, 0.448, 0.450), ``n(f) = f / (||f||_channels + 1e-10)``
and ``w_l`` a 1x1 convolution to one channel without bias (``tpn:criteria/lpips/``). Inputs are
images in [-1, 1].

Key names are the published ones, so the files load strictly:

* ``net.features.{0,3,6,8,10}.{weight,bias}`` - torchvision's AlexNet ``features.*`` (the
  ``alexnet-owt-7be5be79.pth`` file under the ``net.`` prefix; its ``classifier.*`` entries are unused);
* ``lin{0..4}.model.1.weight`` - the linear heads exactly as in the ``lpips`` package's
  ``weights/v0.1/alex.pth`` (``model.0`` is a parameterless dropout slot).

The shift/scale constants are non-persistent buffers. Loading lives in
:func:`vidtriplane.checkpoints.load_lpips`.
"""
from __future__ import annotations

import torch
from torch import nn

LPIPS_CHANNELS = (64, 192, 384, 256, 256)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10
# indices of torchvision's ``alexnet.features`` whose ReLU outputs are the five LPIPS layers
ALEXNET_TAPS = (1, 4, 7, 9, 11)


class AlexNetFeatures(nn.Module):
    """torchvision AlexNet's convolutional trunk up to the fifth ReLU (keys ``features.N.*``)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),    # 0
            nn.ReLU(),                                                # 1 -> tap 1
            nn.MaxPool2d(kernel_size=3, stride=2),                    # 2
            nn.Conv2d(64, 192, kernel_size=5, padding=2),             # 3
            nn.ReLU(),                                                # 4 -> tap 2
            nn.MaxPool2d(kernel_size=3, stride=2),                    # 5
            nn.Conv2d(192, 384, kernel_size=3, padding=1),            # 6
            nn.ReLU(),                                                # 7 -> tap 3
            nn.Conv2d(384, 256, kernel_size=3, padding=1),            # 8
            nn.ReLU(),                                                # 9 -> tap 4
            nn.Conv2d(256, 256, kernel_size=3, padding=1),            # 10
            nn.ReLU(),                                                # 11 -> tap 5
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs, in order."""
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in ALEXNET_TAPS:
                taps.append(x)
        return taps


class LinearHead(nn.Module):
    """``model`` = (dropout slot, 1x1 conv to one channel without bias): key ``model.1.weight``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def unit_normalize(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Divide by the L2 norm over channels plus ``eps`` (added to the norm, not under the root)."""
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """Learned perceptual distance: ``forward(x, y)`` -> [B] per-image distances (inputs in [-1, 1])."""

    def __init__(self) -> None:
        super().__init__()
        self.net = AlexNetFeatures()
        self.lin0 = LinearHead(LPIPS_CHANNELS[0])
        self.lin1 = LinearHead(LPIPS_CHANNELS[1])
        self.lin2 = LinearHead(LPIPS_CHANNELS[2])
        self.lin3 = LinearHead(LPIPS_CHANNELS[3])
        self.lin4 = LinearHead(LPIPS_CHANNELS[4])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    @property
    def heads(self) -> tuple[LinearHead, ...]:
        return (self.lin0, self.lin1, self.lin2, self.lin3, self.lin4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS needs two [B, 3, H, W] images of one shape, got {list(x.shape)} and "
                             f"{list(y.shape)}")
        # 1. shift/scale both images and run them through AlexNet together
        b = x.shape[0]
        feats = self.net((torch.cat([x, y]) - self.shift) / self.scale)
        total = x.new_zeros(b)
        for f, head in zip(feats, self.heads):
            # 2. unit-normalise over channels, squared difference
            diff = (unit_normalize(f[:b]) - unit_normalize(f[b:])) ** 2
            # 3. 1x1 linear head, spatial mean, sum over layers
            total = total + head(diff).mean(dim=(1, 2, 3))
        return total


def lpips_mean(model: LPIPS, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training criterion: LPIPS averaged over the batch (``tpn:criteria/lpips/lpips.py``)."""
    return model(x, y).mean()


__all__ = ["ALEXNET_TAPS", "AlexNetFeatures", "LPIPS", "LPIPS_CHANNELS", "LinearHead", "lpips_mean",
           "unit_normalize"]
