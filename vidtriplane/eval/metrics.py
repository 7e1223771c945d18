"""Reconstruction metrics of TriPlaneNet's evaluation (``tpn:metrics/metrics.py``).

Per image pair (X = input, Y = output, both [B, 3, H, W] in [-1, 1], resized to 256 like the official
``Resize((256, 256))``):

* ``mse``: ``nn.MSELoss`` on the [-1, 1] tensors (divide by 4 for a [0, 1] MSE);
* ``lpips``: AlexNet LPIPS v0.1 on [-1, 1];
* ``msssim``: ``pytorch_msssim`` MS-SSIM (data_range 1, 5 scales, Gaussian window 11, sigma 1.5) on
  (t + 1) / 2; it needs images of at least 161 px;
* ``id``: cosine similarity of CurricularFace IR-101 embeddings of the 112x112 aligned faces (images
  truncated to uint8 first, like ``to_pil_image``); pairs where either image has no face are NaN.

Scores are averaged with nanmean over all images (pairs without a face drop out of ``id``). A metric
whose network or package is absent is not computed; :class:`MetricReport` names the missing file in
``missing`` so the user knows what to fetch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from vidtriplane.models.arcface import FaceEmbedder
from vidtriplane.models.lpips import LPIPS
from vidtriplane.weights.registry import REGISTRY

if TYPE_CHECKING:  # face_align needs OpenCV; the other metrics do not
    from vidtriplane.eval.face_align import Aligner

METRICS = ("mse", "lpips", "msssim", "id")
MSSSIM_MIN_SIDE = 161  # 5 scales with an 11-tap window: the smaller side must exceed (11 - 1) * 2**4
EVAL_SIZE = 256


class MetricError(ValueError):
    """Inputs a metric cannot score (wrong shapes, images too small); the message says what to change."""


def _check(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
        raise MetricError(f"metrics need two [B, 3, H, W] batches of one shape, got {list(x.shape)} and "
                          f"{list(y.shape)}")


def resize_to(t: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to size x size without antialiasing (torchvision 0.12 ``Resize`` on tensors)."""
    if t.shape[-2:] == (size, size):
        return t
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)


def mse_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B] mean squared error of each pair on the [-1, 1] values."""
    _check(x, y)
    return (y - x).square().flatten(1).mean(dim=1)


def msssim_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B] MS-SSIM of each pair on (t + 1) / 2 (pytorch-msssim, data_range 1)."""
    _check(x, y)
    if min(x.shape[-2:]) < MSSSIM_MIN_SIDE:
        raise MetricError(f"MS-SSIM at 5 scales needs images of at least {MSSSIM_MIN_SIDE} px; got "
                          f"{x.shape[-2]}x{x.shape[-1]} (resize them to {EVAL_SIZE} first)")
    try:
        from pytorch_msssim import ms_ssim
    except ImportError:
        raise MetricError("MS-SSIM needs the pytorch-msssim package: pip install pytorch-msssim") from None
    return ms_ssim((x + 1) / 2, (y + 1) / 2, data_range=1, size_average=False)


def lpips_per_image(model: LPIPS, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B] LPIPS distance of each pair."""
    _check(x, y)
    return model(y, x)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]: ``(t + 1) / 2 * 255`` truncated (``to_pil_image``)."""
    return ((t.detach() + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def id_similarity(embedder: FaceEmbedder, align: "Aligner", x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B] cosine similarity of the aligned faces' embeddings; NaN where either image has no face."""
    _check(x, y)
    faces_x, found_x = align(to_uint8(x))
    faces_y, found_y = align(to_uint8(y))
    device = next(embedder.parameters()).device
    sim = (embedder(faces_x.to(device)) * embedder(faces_y.to(device))).sum(dim=1).float().cpu()
    found = torch.from_numpy(np.asarray(found_x, dtype=bool) & np.asarray(found_y, dtype=bool))
    return torch.where(found, sim, torch.full_like(sim, float("nan")))


@dataclass(frozen=True)
class MetricNets:
    """Networks the metrics need; None leaves the metric out (reported in ``MetricReport.missing``)."""

    lpips: LPIPS | None = None
    """AlexNet LPIPS (``vidtriplane.checkpoints.load_lpips``)."""
    id_embedder: FaceEmbedder | None = None
    """CurricularFace IR-101 (``load_face_embedder(path, FaceEmbedderConfig.ir101())``)."""
    align: "Aligner | None" = None
    """Face detection + 112x112 alignment (e.g. ``landmark_aligner(mtcnn_five_points)``)."""


def _weights_hint(*names: str) -> str:
    files = " + ".join(REGISTRY[n].filename for n in names)
    return f"{files} (vidtriplane weights fetch {' '.join(names)})"


@dataclass(frozen=True)
class MetricReport:
    """Averages (nanmean over images) and per-image values of one evaluation."""

    count: int
    """Image pairs scored."""
    mse: float
    lpips: float | None
    """None when the metric could not run (see ``missing``)."""
    msssim: float | None
    id: float | None
    id_count: int = 0
    """Pairs with a face found in both images (the ones ``id`` averages)."""
    per_image: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Metric name -> one value per image (NaN = not scored, e.g. no face)."""
    missing: dict[str, str] = field(default_factory=dict)
    """Metric name -> the weight file (or package) it needs."""

    def summary(self) -> str:
        """One line per metric, for stats files and logs."""
        lines = [f"images: {self.count}"]
        for name in METRICS:
            value = getattr(self, name)
            if value is None:
                lines.append(f"{name}: not computed (needs {self.missing.get(name, '?')})")
            else:
                extra = f" over {self.id_count} images with a face" if name == "id" else ""
                lines.append(f"{name}: {value:.6f}{extra}")
        return "\n".join(lines)


class MetricAccumulator:
    """Scores batches of (input, output) pairs and aggregates them into a :class:`MetricReport`."""

    def __init__(self, nets: MetricNets = MetricNets(), *, size: int | None = EVAL_SIZE) -> None:
        self.nets = nets
        self.size = size
        self.missing: dict[str, str] = {}
        if nets.lpips is None:
            self.missing["lpips"] = _weights_hint("alexnet", "lpips-alex-v0.1")
        if nets.id_embedder is None:
            self.missing["id"] = _weights_hint("curricularface")
        elif nets.align is None:
            self.missing["id"] = "a face detector/aligner (MetricNets.align, e.g. MTCNN five points)"
        try:
            import pytorch_msssim  # noqa: F401
        except ImportError:
            self.missing["msssim"] = "the pytorch-msssim package (pip install pytorch-msssim)"
        self.values: dict[str, list[float]] = {name: [] for name in METRICS if name not in self.missing}

    @torch.no_grad()
    def add(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score one batch (x = inputs, y = outputs); returns this batch's per-image values."""
        _check(x, y)
        if self.size is not None:
            x, y = resize_to(x, self.size), resize_to(y, self.size)
        scores = {"mse": mse_per_image(x, y)}
        if "lpips" in self.values:
            device = next(self.nets.lpips.parameters()).device
            scores["lpips"] = lpips_per_image(self.nets.lpips, x.to(device), y.to(device))
        if "msssim" in self.values:
            scores["msssim"] = msssim_per_image(x, y)
        if "id" in self.values:
            scores["id"] = id_similarity(self.nets.id_embedder, self.nets.align, x, y)
        for name, v in scores.items():
            self.values[name].extend(float(s) for s in v.detach().float().cpu())
        return scores

    def report(self) -> MetricReport:
        """nanmean of every metric over the images added so far."""
        def mean(name: str) -> float | None:
            if name not in self.values:
                return None
            vals = [v for v in self.values[name] if not math.isnan(v)]
            return float(np.mean(vals)) if vals else float("nan")

        ids = self.values.get("id", [])
        return MetricReport(
            count=len(self.values["mse"]), mse=mean("mse"), lpips=mean("lpips"), msssim=mean("msssim"),
            id=mean("id"), id_count=sum(not math.isnan(v) for v in ids),
            per_image={k: tuple(v) for k, v in self.values.items()}, missing=dict(self.missing))


__all__ = ["EVAL_SIZE", "METRICS", "MSSSIM_MIN_SIDE", "MetricAccumulator", "MetricError", "MetricNets", "MetricReport",
           "id_similarity", "lpips_per_image", "mse_per_image", "msssim_per_image", "resize_to", "to_uint8"]
