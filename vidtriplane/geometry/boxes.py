"""Axis-aligned boxes in torch: overlap, greedy non-maximum suppression, squaring, area-resampled crops.

Boxes are ``[K, 4]`` tensors ``(x0, y0, x1, y1)`` in pixel-*edge* coordinates: pixel column ``i`` spans
``[i, i + 1)``, so a box's width is ``x1 - x0`` and the pixels it covers are ``x0 .. x1 - 1``. (MTCNN's
own code uses 1-based inclusive boxes with ``+ 1`` in every width; shifted by one pixel they are exactly
these boxes, and its ``+ 1`` widths become plain differences.)

Everything works on the device of its inputs (CPU or CUDA) without torchvision.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch

Mode = Literal["union", "min"]


def areas(boxes: torch.Tensor) -> torch.Tensor:
    """Box areas [K] (zero for empty boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def overlap(a: torch.Tensor, b: torch.Tensor, mode: Mode = "union") -> torch.Tensor:
    """Pairwise overlap [A, B]: intersection over union, or over the smaller area (``mode='min'``)."""
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp(min=0)
    inter = iw * ih
    area_a, area_b = areas(a)[:, None], areas(b)[None, :]
    denom = torch.minimum(area_a, area_b) if mode == "min" else area_a + area_b - inter
    return inter / denom.clamp(min=1e-12)


def _suppressed(overlaps: torch.Tensor, same: Optional[torch.Tensor], threshold: float) -> torch.Tensor:
    hit = overlaps > threshold
    return hit & same if same is not None else hit


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, *, groups: Optional[torch.Tensor] = None,
        mode: Mode = "union", block: int = 512) -> torch.Tensor:
    """Greedy NMS: indices [M] of the kept boxes, highest score first.

    Visiting boxes by decreasing score, a box is dropped when it overlaps an already kept box of the same
    ``group`` (e.g. the image index) by more than ``threshold``. Computed in blocks of ``block`` boxes:
    each block is first checked against every box kept so far, then resolved inside itself by iterating
    ``keep[i] = alive[i] and no kept j < i suppresses i`` to its fixed point, which is the greedy result
    (entry ``i`` only depends on entries before it, so the iteration settles from the front).
    """
    k = boxes.shape[0]
    if k == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].to(torch.float64)
    g = groups[order] if groups is not None else None
    kept: list[torch.Tensor] = []  # positions in ``order`` that survive, block by block
    for start in range(0, k, block):
        pos = torch.arange(start, min(k, start + block), device=boxes.device)
        alive = torch.ones(len(pos), dtype=torch.bool, device=boxes.device)
        if kept:
            prev = torch.cat(kept)
            same = g[prev][:, None] == g[pos][None, :] if g is not None else None
            alive = ~_suppressed(overlap(b[prev], b[pos], mode), same, threshold).any(0)
        same = g[pos][:, None] == g[pos][None, :] if g is not None else None
        # suppress[j, i]: j comes before i and overlaps it too much
        suppress = _suppressed(overlap(b[pos], b[pos], mode), same, threshold)
        suppress &= torch.ones_like(suppress).triu(1)
        keep = alive
        while True:
            new = alive & ~(suppress & keep[:, None]).any(0)
            if torch.equal(new, keep):
                break
            keep = new
        kept.append(pos[keep])
    return order[torch.cat(kept)]


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square of side max(width, height) about its centre (MTCNN ``rerec``)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x0 = boxes[:, 0] + (w - side) / 2
    y0 = boxes[:, 1] + (h - side) / 2
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=1)


def regress(boxes: torch.Tensor, offsets: torch.Tensor, *, size_offset: float = 0.0) -> torch.Tensor:
    """Move each edge by its offset times the box size: (x0 + dx0 w, y0 + dy0 h, x1 + dx1 w, y1 + dy1 h),
    with ``size_offset`` added to w and h (MTCNN's P-net stage uses ``w - 1``)."""
    w = boxes[:, 2] - boxes[:, 0] + size_offset
    h = boxes[:, 3] - boxes[:, 1] + size_offset
    scale = torch.stack([w, h, w, h], dim=1)
    return boxes + offsets * scale


def truncate(boxes: torch.Tensor) -> torch.Tensor:
    """MTCNN's integer boxes: its 1-based corners (x0 + 1, y0 + 1, x1, y1) rounded towards zero (``np.fix``)."""
    one = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=boxes.dtype, device=boxes.device)
    return torch.trunc(boxes + one) - one


def _lerp_at(prefix: torch.Tensor, pos: torch.Tensor, dim: int) -> torch.Tensor:
    """A prefix-sum tensor (size L + 1 along ``dim``) linearly interpolated at real positions in [0, L]."""
    last = prefix.shape[dim] - 2
    i0 = pos.floor().clamp(0, last).long()
    frac = (pos - i0).to(prefix.dtype)
    shape = [1] * prefix.ndim
    shape[dim] = -1
    frac = frac.reshape(shape)
    return prefix.index_select(dim, i0) * (1 - frac) + prefix.index_select(dim, i0 + 1) * frac


def area_resize(images: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """``images`` [N, C, H, W] resized to each (h, w) in ``sizes`` by exact area averaging.

    Each output pixel is the mean of the image over its cell (cells of W / w by H / h pixels, with
    fractional coverage at the edges), which is OpenCV's INTER_AREA when shrinking. Separable: prefix sums
    along x (computed once for all sizes), sampled at the cell edges, then the same along y. The prefix sums
    stay in the images' dtype (float32 sums of up to a few thousand 8-bit pixels keep ~0.05 grey levels).
    """
    n, c, height, width = images.shape
    along_x = torch.nn.functional.pad(images.cumsum(3), (1, 0))  # [N, C, H, W + 1]
    out = []
    for h, w in sizes:
        xs = torch.linspace(0, width, w + 1, dtype=torch.float64, device=images.device)
        ys = torch.linspace(0, height, h + 1, dtype=torch.float64, device=images.device)
        row_sums = _lerp_at(along_x, xs, 3).diff(dim=3)  # [N, C, H, w]
        along_y = torch.nn.functional.pad(row_sums.cumsum(2), (0, 0, 1, 0))  # [N, C, H + 1, w]
        sums = _lerp_at(along_y, ys, 2).diff(dim=2)  # [N, C, h, w]
        out.append(sums / ((width / w) * (height / h)))
    return out


def _integral(image: torch.Tensor) -> torch.Tensor:
    """Summed-area table [C, H + 1, W + 1] in float64 with a zero first row and column."""
    table = torch.zeros((image.shape[0], image.shape[1] + 1, image.shape[2] + 1), dtype=torch.float64,
                        device=image.device)
    table[:, 1:, 1:] = image.to(torch.float64).cumsum(1).cumsum(2)
    return table


def _sample_integral(table: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """The summed-area table at real positions: ys [K, A], xs [K, B] -> [K, C, A, B].

    The integral of a piecewise-constant image is bilinear inside each pixel, so bilinear interpolation
    of the table is exact. Positions are clamped to the table, which makes everything outside the image
    count as zero.
    """
    _, hp, wp = table.shape
    ys = ys.clamp(0, hp - 1)
    xs = xs.clamp(0, wp - 1)
    y0 = ys.floor().clamp(max=hp - 2).long()
    x0 = xs.floor().clamp(max=wp - 2).long()
    fy = (ys - y0)[:, None, :, None]
    fx = (xs - x0)[:, None, None, :]
    flat = table.reshape(table.shape[0], -1)

    def at(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        idx = (yi[:, :, None] * wp + xi[:, None, :])  # [K, A, B]
        return flat[:, idx.reshape(-1)].reshape(table.shape[0], *idx.shape).permute(1, 0, 2, 3)

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def crop_resize(images: torch.Tensor, frame: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crops [K, C, size, size] of ``boxes`` [K, 4] from ``images`` [N, C, H, W], area-averaged.

    Each output pixel is the exact mean of the image over its cell of the box (fractional pixel
    coverage, like OpenCV's INTER_AREA when shrinking); parts of a box outside the image count as black,
    as in MTCNN's zero-padded crops. ``frame`` [K] says which image each box is in. Summed-area tables
    are built per image, over the region that its boxes touch.
    """
    k = boxes.shape[0]
    out = torch.zeros((k, images.shape[1], size, size), dtype=images.dtype, device=images.device)
    if k == 0:
        return out
    boxes = boxes.to(torch.float64)
    steps = torch.arange(size + 1, dtype=torch.float64, device=boxes.device) / size
    height, width = images.shape[2:]
    for n in torch.unique(frame).tolist():
        sel = (frame == n).nonzero()[:, 0]
        bx = boxes[sel]
        # 1. the part of the image that these boxes touch
        x0 = int(bx[:, 0].min().floor().clamp(0, width - 1))
        y0 = int(bx[:, 1].min().floor().clamp(0, height - 1))
        x1 = int(bx[:, 2].max().ceil().clamp(x0 + 1, width))
        y1 = int(bx[:, 3].max().ceil().clamp(y0 + 1, height))
        table = _integral(images[n, :, y0:y1, x0:x1])
        # 2. cell boundaries of every box, relative to that region
        xs = (bx[:, 0:1] - x0) + (bx[:, 2:3] - bx[:, 0:1]) * steps
        ys = (bx[:, 1:2] - y0) + (bx[:, 3:4] - bx[:, 1:2]) * steps
        # 3. cell sums from the table's corners, divided by the cell areas
        s = _sample_integral(table, ys, xs)
        sums = s[:, :, 1:, 1:] - s[:, :, :-1, 1:] - s[:, :, 1:, :-1] + s[:, :, :-1, :-1]
        cell = ((bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1]) / size**2).clamp(min=1e-12)
        out[sel] = (sums / cell[:, None, None, None]).to(images.dtype)
    return out
