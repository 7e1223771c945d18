"""Loss/metric networks with random weights for tests: LPIPS with non-negative heads, face embedders
with non-trivial BatchNorm statistics (as in trained files). Frozen and in eval mode."""
from __future__ import annotations

import torch

from vidtriplane.models.arcface import FaceEmbedder, FaceEmbedderConfig
from vidtriplane.models.lpips import LPIPS


def random_lpips(seed: int = 0) -> LPIPS:
    torch.manual_seed(seed)
    model = LPIPS()
    for head in model.heads:
        head.model[1].weight.data.uniform_(0, 1)
    return model.eval().requires_grad_(False)


def random_face_embedder(config: FaceEmbedderConfig = FaceEmbedderConfig.tiny(), seed: int = 0) -> FaceEmbedder:
    torch.manual_seed(seed)
    model = FaceEmbedder(config)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval().requires_grad_(False)
