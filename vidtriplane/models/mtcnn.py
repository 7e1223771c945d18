"""MTCNN's three cascaded networks (Zhang et al. 2016): P-net (proposals), R-net (refine), O-net (output).

Parameter names follow the PyTorch port in the ``facenet-pytorch`` wheel (``facenet_pytorch/data/pnet.pt``,
``rnet.pt``, ``onet.pt``: ``conv1``, ``prelu1``, ..., ``dense6_3``) so those state_dicts load strictly.
Inputs are RGB crops scaled to about [-1, 1] with ``(x - 127.5) / 128`` (:func:`normalize`).

Shapes (N images or crops):

| net | input | trunk | heads |
|---|---|---|---|
| P-net | [N,3,H,W] any size >= 12 | conv3-10, pool2, conv3-16, conv3-32 (fully convolutional) | face prob, 4 offsets per 12x12 window, stride 2 |
| R-net | [N,3,24,24] | conv3-28, pool3/2, conv3-48, pool3/2, conv2-64, fc128 | face prob, 4 offsets |
| O-net | [N,3,48,48] | conv3-32, pool3/2, conv3-64, pool3/2, conv3-64, pool2, conv2-128, fc256 | face prob, 4 offsets, 10 landmark coords |

The pooling layers round up (``ceil_mode``), which equals TensorFlow's 'SAME' / 'VALID' pooling of the
original networks at these sizes. The original networks were trained (in Caffe) on transposed images;
the converted convolution kernels work on ordinary images, but the first dense layer still expects its
features flattened in (x, y, channel) order, hence the ``permute(0, 3, 2, 1)`` before flattening.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

PNET_CELL = 12  # P-net window side in pixels
PNET_STRIDE = 2  # P-net windows are this many pixels apart
RNET_SIZE = 24
ONET_SIZE = 48


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Pixel values 0..255 -> the networks' input range: (x - 127.5) * 0.0078125."""
    return (images - 127.5) * 0.0078125


@dataclass(frozen=True)
class NetOutput:
    """What each MTCNN network returns (P-net keeps the spatial dimensions)."""

    scores: torch.Tensor
    """Face probability: [N, h, w] for P-net, [N] for R-net and O-net."""
    offsets: torch.Tensor
    """Box regression (dx0, dy0, dx1, dy1) in units of the input box size: [N, 4, h, w] or [N, 4]."""
    points: Optional[torch.Tensor] = None
    """O-net only: landmarks [N, 10] (five x then five y) in units of the input box, else None."""


def _face_prob(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the two classes (dim 1), probability of 'face'."""
    return torch.softmax(logits, dim=1)[:, 1]


def _flatten_xy(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, W*H*C] in (x, y, channel) order, the order the dense weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: fully convolutional, one 12x12 window every 2 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> NetOutput:
        # 1. trunk: [N, 3, H, W] -> [N, 32, (H - 2) / 2 - 4, ...] (one cell per 12x12 window)
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        # 2. heads: face probability and box offsets per cell
        return NetOutput(scores=_face_prob(self.conv4_1(x)), offsets=self.conv4_2(x))


class RNet(nn.Module):
    """Refinement network on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> NetOutput:
        # 1. trunk: [N, 3, 24, 24] -> [N, 64, 3, 3] -> [N, 128]
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_xy(x)))
        # 2. heads
        return NetOutput(scores=_face_prob(self.dense5_1(x)), offsets=self.dense5_2(x))


class ONet(nn.Module):
    """Output network on 48x48 crops: final score, box and the five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> NetOutput:
        # 1. trunk: [N, 3, 48, 48] -> [N, 128, 3, 3] -> [N, 256]
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_xy(x)))
        # 2. heads
        return NetOutput(scores=_face_prob(self.dense6_1(x)), offsets=self.dense6_2(x), points=self.dense6_3(x))


class MTCNN(nn.Module):
    """The three networks together (``pnet.*``, ``rnet.*``, ``onet.*``); a container without a forward:
    the cascade (pyramid, NMS, crops) lives in :mod:`vidtriplane.stages.face_mtcnn`."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet = PNet()
        self.rnet = RNet()
        self.onet = ONet()


NETS = ("pnet", "rnet", "onet")
