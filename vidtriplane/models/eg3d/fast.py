"""Fast pure-PyTorch EG3D volume rendering: the ``compiled`` backend (wrapped in ``torch.compile``).

Computes what :func:`vidtriplane.models.eg3d.renderer.render_rays` computes (same depths, same random
numbers, same compositing) with a layout that fuses well:

1. :func:`planes_channels_last` - planes [B, 3, C, H, W] -> [B, 3, H, W, C] once per call, so one
   bilinear tap reads C contiguous numbers.
2. :func:`triplane_features` - one gather-based bilinear lookup of all 3 planes x 4 taps, summed into
   the plane mean (``grid_sample(align_corners=False, padding_mode='zeros')`` semantics, the box_warp
   scaling and EG3D's (x, y), (x, z), (z, x) plane axes); no strided [B, 3, M, C] tensor to average.
3. :func:`decode` - the OSG decoder MLP on contiguous [P, C] rows; raw density + widened sigmoid.
4. :func:`merge_positions` - both depth lists are already sorted: their merge positions come from
   ``searchsorted`` (coarse first on ties, as a stable sort of ``cat[coarse, fine]``) instead of a sort;
5. :func:`fine_pass` - merges only depths and densities; the colours stay where they are and are
   weighted by their merged position's interval weights (the reference :func:`ray_weights`).

Without ``torch.compile`` the lookup materialises [P, 12, C] gathers: always run it compiled (the
backend selection in :mod:`vidtriplane.models.eg3d.backends` does) except on tiny test shapes.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from vidtriplane.models.eg3d.decoder import OSGDecoder
from vidtriplane.models.eg3d.renderer import (RenderResult, RenderSettings, coarse_depths, importance_depths,
                                              ray_march, ray_weights)

# (w1 [H, C], b1 [H], w2 [1 + C', H], b2 [1 + C']): the decoder with its run-time gains applied
DecoderWeights = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def planes_channels_last(planes: torch.Tensor) -> torch.Tensor:
    """[B, 3, C, H, W] -> contiguous [B, 3, H, W, C]."""
    return planes.permute(0, 1, 3, 4, 2).contiguous()


def decoder_weights(decoder: OSGDecoder) -> DecoderWeights:
    """The OSG decoder's two layers as plain tensors, equalised-lr gains applied (as its forward does)."""
    fc1, fc2 = decoder.net[0], decoder.net[2]
    return (fc1.weight * fc1.weight_gain, fc1.bias * fc1.bias_gain,
            fc2.weight * fc2.weight_gain, fc2.bias * fc2.bias_gain)


def plane_taps(u: torch.Tensor, v: torch.Tensor, height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The 4 bilinear taps of grid points (u, v) in [-1, 1] on an H x W plane: (row index, weight) each.

    ``grid_sample(align_corners=False, padding_mode='zeros')``: u maps to the pixel coordinate
    ``((u + 1) * W - 1) / 2``; taps outside the plane get weight 0 and a clamped (valid) index.
    Taps in grid_sample's order (north-west, north-east, south-west, south-east).
    """
    ix = ((u + 1) * width - 1) / 2
    iy = ((v + 1) * height - 1) / 2
    x0, y0 = ix.floor(), iy.floor()
    taps = []
    for dy in (0, 1):
        for dx in (0, 1):
            x, y = x0 + dx, y0 + dy
            wx = (x0 + 1 - ix) if dx == 0 else (ix - x0)
            wy = (y0 + 1 - iy) if dy == 0 else (iy - y0)
            inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
            row = y.clamp(0, height - 1).long() * width + x.clamp(0, width - 1).long()
            taps.append((row, torch.where(inside, wx * wy, torch.zeros_like(wx))))
    return taps


def triplane_features(planes_cl: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Mean over the 3 planes of the bilinear features: planes [B, 3, H, W, C], points [B, P, 3] -> [B, P, C].

    Points are scaled by ``2 / box_warp``; plane k reads grid (u, v) = (x, y), (x, z), (z, x) (EG3D's
    axes, the third plane is ZX). Written as a sum of 12 gathers so the compiler fuses it into one loop.
    """
    b, _, h, w, c = planes_cl.shape
    rows = planes_cl.reshape(-1, c)
    x, y, z = (points * (2 / box_warp)).unbind(-1)
    first = torch.arange(b, device=points.device).view(b, 1) * (3 * h * w)  # row of plane 0 per sample
    total = None
    for k, (u, v) in enumerate(((x, y), (x, z), (z, x))):
        plane = None
        for row, weight in plane_taps(u, v, h, w):
            term = rows[first + k * h * w + row].float() * weight.unsqueeze(-1)
            plane = term if plane is None else plane + term
        total = plane if total is None else total + plane
    return total.float() / 3


def decode(features: torch.Tensor, weights: DecoderWeights, mlp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """OSG decoder on [..., C] features -> [..., 1 + C']: raw density, then ``sigmoid * (1 + 2e-3) - 1e-3``.
    ``mlp_dtype`` (bf16/fp16): the two matrix products in that type (AMX / tensor cores), all else float32."""
    w1, b1, w2, b2 = weights
    shape = features.shape[:-1]
    features = features.reshape(-1, features.shape[-1])
    if mlp_dtype is None:
        hidden = F.softplus(features @ w1.t() + b1)
        out = hidden @ w2.t() + b2
    else:
        hidden = F.softplus((features.to(mlp_dtype) @ w1.t().to(mlp_dtype)).float() + b1)
        out = (hidden.to(mlp_dtype) @ w2.t().to(mlp_dtype)).float() + b2
    colors = torch.sigmoid(out[:, 1:]) * (1 + 2 * 0.001) - 0.001
    return torch.cat([out[:, :1], colors], 1).reshape(*shape, -1)


def sample_features(planes_cl: torch.Tensor, weights: DecoderWeights, origins: torch.Tensor, dirs: torch.Tensor,
                    depths: torch.Tensor, box_warp: float, mlp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Decoded samples [B, M, N, 1 + C'] at depths [B, M, N] along rays origins/dirs [B, M, 3]."""
    b, m, n = depths.shape
    points = origins.unsqueeze(2) + depths.unsqueeze(-1) * dirs.unsqueeze(2)
    features = triplane_features(planes_cl, points.reshape(b, m * n, 3), box_warp)
    return decode(features, weights, mlp_dtype).reshape(b, m, n, -1)


def merge_positions(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each element of sorted rows ``first`` [R, N] and ``second`` [R, F] lands in their merge.

    Element i of ``first`` goes to ``i + #(second < first_i)``, element j of ``second`` to
    ``j + #(first <= second_j)`` (ties: ``first`` before ``second``, like a stable sort of the concatenation).
    """
    pos_first = torch.arange(first.shape[1], device=first.device) + torch.searchsorted(second, first, right=False)
    pos_second = torch.arange(second.shape[1], device=first.device) + torch.searchsorted(first, second, right=True)
    return pos_first, pos_second


def coarse_pass(planes_cl: torch.Tensor, weights: DecoderWeights, origins: torch.Tensor, dirs: torch.Tensor,
                depths: torch.Tensor, box_warp: float, mlp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples [B, M, N, 1 + C'] and compositing weights [B, M, N - 1] at coarse depths [B, M, N]."""
    samples = sample_features(planes_cl, weights, origins, dirs, depths, box_warp, mlp_dtype)
    return samples, ray_weights(samples[..., :1], depths.unsqueeze(-1))[..., 0]


def fine_pass(planes_cl: torch.Tensor, weights: DecoderWeights, origins: torch.Tensor, dirs: torch.Tensor,
              depths: torch.Tensor, samples: torch.Tensor, fine: torch.Tensor, box_warp: float,
              white_back: bool, mlp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """Decode sorted fine depths [B, M, F], merge with the coarse samples by depth, composite.

    Only depths and densities are merged ([B, M, N + F] scalars); the colours are never reordered:
    ``sum_k w_k (c_k + c_{k+1}) / 2 = sum_k c_k (w_{k-1} + w_k) / 2``, so each sample's colour is weighted
    by the mean of its two intervals' weights, read back at its merged position.
    Returns (rgb [B, M, C'] in [-1, 1], depth [B, M, 1] unclamped, weights_total [B, M, 1], min, max depth).
    """
    b, m, n = depths.shape
    fine_samples = sample_features(planes_cl, weights, origins, dirs, fine, box_warp, mlp_dtype)
    # 1. merged depths and densities
    pos_c, pos_f = (p.view(b, m, -1) for p in merge_positions(depths.reshape(b * m, n), fine.reshape(b * m, -1)))
    merged = depths.new_zeros(b, m, n + fine.shape[-1])
    z = merged.scatter(2, pos_c, depths).scatter(2, pos_f, fine)
    sigma = merged.scatter(2, pos_c, samples[..., 0]).scatter(2, pos_f, fine_samples[..., 0])
    # 2. interval weights (reference function), per-sample colour weights
    w = ray_weights(sigma.unsqueeze(-1), z.unsqueeze(-1))[..., 0]
    per_sample = (F.pad(w, (1, 0)) + F.pad(w, (0, 1))) / 2
    rgb = ((per_sample.gather(2, pos_c).unsqueeze(-1) * samples[..., 1:]).sum(2)
           + (per_sample.gather(2, pos_f).unsqueeze(-1) * fine_samples[..., 1:]).sum(2))
    # 3. expected depth (NaN -> inf), optional white background, colours to [-1, 1]
    total = w.sum(2, keepdim=True)
    depth = torch.nan_to_num((w * (z[..., :-1] + z[..., 1:]) / 2).sum(2, keepdim=True) / total, float("inf"))
    if white_back:
        rgb = rgb + 1 - total
    return rgb * 2 - 1, depth, total, torch.minimum(depths.min(), fine.min()), torch.maximum(depths.max(), fine.max())


Passes = tuple[Callable[..., tuple[torch.Tensor, torch.Tensor]], Callable[..., tuple[torch.Tensor, ...]]]


def chunk_starts(num_rays: int, batch: int, chunk_rays: int) -> tuple[int, range]:
    """(rays per image per chunk, chunk starts) of ``render_rays``: ``chunk_rays`` summed over the batch.

    The reference draws its random numbers chunk by chunk (coarse jitter, then importance u), so any
    backend that wants the same numbers walks the same chunks.
    """
    step = num_rays if chunk_rays <= 0 else max(1, chunk_rays // batch)
    return step, range(0, num_rays, step)


def render_rays_fast(planes: torch.Tensor, decoder: OSGDecoder, origins: torch.Tensor, dirs: torch.Tensor,
                     settings: RenderSettings, *, generator: torch.Generator | None = None,
                     passes: Passes = (coarse_pass, fine_pass), compute_rays: int = 0,
                     mlp_dtype: torch.dtype | None = None) -> RenderResult:
    """``render_rays`` with the fast layout; ``passes`` are (compiled) :func:`coarse_pass`/:func:`fine_pass`.

    Depths and random numbers come from the reference :func:`coarse_depths`/:func:`importance_depths`,
    drawn over the reference's chunks (``settings.chunk_rays``), so ``stochastic`` sampling with a seeded
    generator matches the eager backend. The passes run on sub-chunks of ``compute_rays`` rays (summed
    over the batch; 0 = the reference's chunks) so that their temporaries stay in the CPU caches.
    ``mlp_dtype``: the planes are looked up in that type (interpolated in float32) and the decoder
    multiplies in it (:func:`decode`); compositing always stays float32.
    """
    b, m, _ = origins.shape
    weights = tuple(t.detach().float() for t in decoder_weights(decoder))
    planes_cl = planes_channels_last(planes.to(mlp_dtype or torch.float32))  # half the bytes to look up
    step, starts = chunk_starts(m, b, settings.chunk_rays)
    sub = step if compute_rays <= 0 else min(step, max(1, compute_rays // b))
    parts = []
    for s in starts:
        o, d = origins[:, s:s + step], dirs[:, s:s + step]
        # 1. coarse depths of the whole chunk (same jitter draws as the reference)
        depths = coarse_depths(b, o.shape[1], settings.depth_resolution, settings.ray_start, settings.ray_end,
                               sampling=settings.sampling, generator=generator, device=o.device)[..., 0]
        subs = [slice(k, k + sub) for k in range(0, o.shape[1], sub)]
        if settings.sampling == "deterministic":  # no random numbers: each sub-chunk runs start to end
            parts += [_sub_chunk(passes, planes_cl, weights, o[:, i], d[:, i], depths[:, i], settings, mlp_dtype)
                      for i in subs]
            continue
        # 2. stochastic: coarse samples of every sub-chunk, then importance u for the whole chunk
        coarse = [passes[0](planes_cl, weights, o[:, i], d[:, i], depths[:, i], settings.box_warp, mlp_dtype)
                  for i in subs]
        fine = sorted_fine_depths(depths, torch.cat([w for _, w in coarse], 1), settings, generator)
        parts += [_finish(passes, planes_cl, weights, o[:, i], d[:, i], depths[:, i], samples, fine[:, i], settings,
                          mlp_dtype) for i, (samples, _) in zip(subs, coarse)]
    rgb = torch.cat([p[0] for p in parts], 1)
    depth = torch.cat([p[1] for p in parts], 1)
    lo = torch.stack([p[3] for p in parts]).min()
    hi = torch.stack([p[4] for p in parts]).max()
    return RenderResult(features=rgb, depth=torch.clamp(depth, lo, hi),
                        weights_total=torch.cat([p[2] for p in parts], 1))


def sorted_fine_depths(depths: torch.Tensor, ray_w: torch.Tensor, settings: RenderSettings,
                 generator: torch.Generator | None) -> torch.Tensor | None:
    """Sorted importance depths [B, M, F] (reference sampler), None without importance sampling."""
    if settings.depth_resolution_importance == 0:
        return None
    fine = importance_depths(depths.unsqueeze(-1), ray_w.unsqueeze(-1), settings.depth_resolution_importance,
                             sampling=settings.sampling, generator=generator)[..., 0]
    return fine.sort(-1).values  # random u are unsorted; linspace u give sorted depths up to rounding


def _finish(passes: Passes, planes_cl: torch.Tensor, weights: DecoderWeights, o: torch.Tensor, d: torch.Tensor,
            depths: torch.Tensor, samples: torch.Tensor, fine: torch.Tensor | None,
            settings: RenderSettings, mlp_dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
    """Fine pass + merge + composite, or the coarse composite alone without importance samples."""
    if fine is None:
        rgb, depth, w = ray_march(samples[..., 1:], samples[..., :1], depths.unsqueeze(-1),
                                  white_back=settings.white_back, clamp_depth=False)
        return rgb, depth, w.sum(2), depths.min(), depths.max()
    return passes[1](planes_cl, weights, o, d, depths, samples, fine, settings.box_warp, settings.white_back, mlp_dtype)


def _sub_chunk(passes: Passes, planes_cl: torch.Tensor, weights: DecoderWeights, o: torch.Tensor, d: torch.Tensor,
               depths: torch.Tensor, settings: RenderSettings, mlp_dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
    """A whole deterministic sub-chunk (no random numbers): coarse, importance, fine."""
    samples, ray_w = passes[0](planes_cl, weights, o, d, depths, settings.box_warp, mlp_dtype)
    fine = sorted_fine_depths(depths, ray_w, settings, None)
    return _finish(passes, planes_cl, weights, o, d, depths, samples, fine, settings, mlp_dtype)
