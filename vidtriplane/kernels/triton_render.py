"""Fused Triton kernels for EG3D volume rendering (the ``triton`` backend; forward only).

One program renders ``BLOCK_RAYS`` rays and walks their samples in order, keeping everything per ray in
registers; no [B, M, N, C] tensor is written to global memory. Per sample:

1. tri-plane lookup - points ``o + t d`` scaled by ``2 / box_warp``; plane k reads grid (u, v) = (x, y),
   (x, z), (z, x) (EG3D's axes, the third plane is ZX); bilinear like ``grid_sample(align_corners=False,
   padding_mode='zeros')`` on channels-last planes [B, 3, H, W, C]; mean of the three planes;
2. the OSG decoder MLP (C -> hidden, softplus, -> 1 + C) with ``tl.dot``; raw density and the widened
   sigmoid ``sigmoid * (1 + 2e-3) - 1e-3`` for the colours;
3. MipNeRF compositing of the interval to the previous sample (``eg3d:.../volumetric_rendering/
   ray_marcher.py``): ``sigma = softplus((d_prev + d) / 2 - 1)``, ``alpha = 1 - exp(-sigma * delta)``,
   ``w = alpha * T``, ``T *= 1 - alpha + 1e-10``, midpoint colours and depths.

:func:`coarse_weights` runs the coarse pass (densities only) and returns the interval weights the
importance sampler needs; :func:`fine_composite` walks the coarse and the (sorted) fine depths of each
ray as one merged sorted list - a two-pointer merge, no sort - re-evaluating the coarse samples instead
of storing them. Both take ``planes_cl`` from :func:`prepare_planes` and the decoder from
:func:`prepare_decoder`. Set ``TRITON_INTERPRET=1`` before importing this module to run it on CPU
tensors (slow; the tests do that on tiny shapes).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

#: rays per program and warps per program (defaults of the launchers; benchmarks/gpu_fast.py sweeps them)
BLOCK_RAYS = 32
NUM_WARPS = 4
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


# Only core triton.language builtins below (no tl.sum / tl.sigmoid / tl.zeros: those are @jit functions
# of triton's standard library, which the CPU interpreter cannot call unless TRITON_INTERPRET was set
# before triton itself was imported).


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _softplus(x):
    # torch.nn.functional.softplus (beta 1, threshold 20), written in the overflow-free form
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x))))


@triton.jit
def _plane(planes_ptr, base, u, v, mask, H, W, cols, C: tl.constexpr):
    """Bilinear [BLOCK, C] lookup of grid points (u, v) on one channels-last plane starting at row ``base``."""
    ix = ((u + 1.0) * W - 1.0) / 2.0
    iy = ((v + 1.0) * H - 1.0) / 2.0
    x0 = tl.floor(ix)
    y0 = tl.floor(iy)
    x1 = x0 + 1.0
    y1 = y0 + 1.0
    wx0 = x1 - ix
    wx1 = ix - x0
    wy0 = y1 - iy
    wy1 = iy - y0
    in_x0 = (x0 >= 0.0) & (x0 <= W - 1.0)
    in_x1 = (x1 >= 0.0) & (x1 <= W - 1.0)
    in_y0 = (y0 >= 0.0) & (y0 <= H - 1.0) & mask
    in_y1 = (y1 >= 0.0) & (y1 <= H - 1.0) & mask
    xi0 = tl.minimum(tl.maximum(x0, 0.0), W - 1.0).to(tl.int64)
    xi1 = tl.minimum(tl.maximum(x1, 0.0), W - 1.0).to(tl.int64)
    r0 = base + tl.minimum(tl.maximum(y0, 0.0), H - 1.0).to(tl.int64) * W
    r1 = base + tl.minimum(tl.maximum(y1, 0.0), H - 1.0).to(tl.int64) * W
    m = in_y0 & in_x0
    acc = tl.load(planes_ptr + (r0 + xi0)[:, None] * C + cols[None, :], mask=m[:, None], other=0.0).to(tl.float32) \
        * (wx0 * wy0)[:, None]
    m = in_y0 & in_x1
    acc += tl.load(planes_ptr + (r0 + xi1)[:, None] * C + cols[None, :], mask=m[:, None], other=0.0).to(tl.float32) \
        * (wx1 * wy0)[:, None]
    m = in_y1 & in_x0
    acc += tl.load(planes_ptr + (r1 + xi0)[:, None] * C + cols[None, :], mask=m[:, None], other=0.0).to(tl.float32) \
        * (wx0 * wy1)[:, None]
    m = in_y1 & in_x1
    acc += tl.load(planes_ptr + (r1 + xi1)[:, None] * C + cols[None, :], mask=m[:, None], other=0.0).to(tl.float32) \
        * (wx1 * wy1)[:, None]
    return acc


@triton.jit
def _sample(planes_ptr, base, plane_rows, ox, oy, oz, dx, dy, dz, t, mask, scale, H, W, cols,
            w1t, b1, w2t, b2, w_sigma, b_sigma, C: tl.constexpr, WITH_COLOR: tl.constexpr, DOT: tl.constexpr):
    """(raw density [BLOCK], colours [BLOCK, C]) at depth t of each ray (colours are 0 unless WITH_COLOR)."""
    x = (ox + t * dx) * scale
    y = (oy + t * dy) * scale
    z = (oz + t * dz) * scale
    feat = _plane(planes_ptr, base, x, y, mask, H, W, cols, C)
    feat += _plane(planes_ptr, base + plane_rows, x, z, mask, H, W, cols, C)
    feat += _plane(planes_ptr, base + 2 * plane_rows, z, x, mask, H, W, cols, C)
    feat = feat / 3.0
    hidden = _softplus(tl.dot(feat, w1t, input_precision=DOT) + b1[None, :])
    sigma = tl.reduce(hidden * w_sigma[None, :], 1, _add) + b_sigma
    if WITH_COLOR:
        raw = tl.dot(hidden, w2t, input_precision=DOT) + b2[None, :]
        color = 1.0 / (1.0 + tl.exp(-raw)) * (1 + 2 * 0.001) - 0.001
    else:
        color = feat * 0.0
    return sigma, color


@triton.jit
def _ray_setup(origins_ptr, dirs_ptr, w1t_ptr, b1_ptr, w2t_ptr, b2_ptr, R, M, H, W,
               C: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr):
    """Ray indices, mask, first plane row per ray, origins/directions and the decoder weights of a program."""
    rays = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = rays < R
    base = (rays // M).to(tl.int64) * 3 * H * W
    ox = tl.load(origins_ptr + rays * 3, mask=mask, other=0.0)
    oy = tl.load(origins_ptr + rays * 3 + 1, mask=mask, other=0.0)
    oz = tl.load(origins_ptr + rays * 3 + 2, mask=mask, other=0.0)
    dx = tl.load(dirs_ptr + rays * 3, mask=mask, other=0.0)
    dy = tl.load(dirs_ptr + rays * 3 + 1, mask=mask, other=0.0)
    dz = tl.load(dirs_ptr + rays * 3 + 2, mask=mask, other=0.0)
    cols = tl.arange(0, C)
    hid = tl.arange(0, HIDDEN)
    w1t = tl.load(w1t_ptr + cols[:, None] * HIDDEN + hid[None, :])  # [C, HIDDEN]
    b1 = tl.load(b1_ptr + hid)
    w2t = tl.load(w2t_ptr + hid[:, None] * C + cols[None, :])  # [HIDDEN, C] (colour outputs)
    b2 = tl.load(b2_ptr + cols)
    return rays, mask, base, ox, oy, oz, dx, dy, dz, cols, w1t, b1, w2t, b2


@triton.jit
def _coarse_kernel(planes_ptr, origins_ptr, dirs_ptr, depths_ptr, out_ptr, w1t_ptr, b1_ptr, w2t_ptr, b2_ptr,
                   w_sigma_ptr, b_sigma, R, M, N, H, W, scale,
                   C: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr, DOT: tl.constexpr):
    rays, mask, base, ox, oy, oz, dx, dy, dz, cols, w1t, b1, w2t, b2 = _ray_setup(
        origins_ptr, dirs_ptr, w1t_ptr, b1_ptr, w2t_ptr, b2_ptr, R, M, H, W, C, HIDDEN, BLOCK)
    w_sigma = tl.load(w_sigma_ptr + tl.arange(0, HIDDEN))
    # 1. first sample
    t_prev = tl.load(depths_ptr + rays * N, mask=mask, other=0.0)
    s_prev, _ = _sample(planes_ptr, base, H * W, ox, oy, oz, dx, dy, dz, t_prev, mask, scale, H, W, cols,
                        w1t, b1, w2t, b2, w_sigma, b_sigma, C, False, DOT)
    trans = tl.full([BLOCK], 1.0, tl.float32)
    # 2. each further sample closes one interval: store its compositing weight
    for k in range(1, N):
        t = tl.load(depths_ptr + rays * N + k, mask=mask, other=0.0)
        s, _ = _sample(planes_ptr, base, H * W, ox, oy, oz, dx, dy, dz, t, mask, scale, H, W, cols,
                       w1t, b1, w2t, b2, w_sigma, b_sigma, C, False, DOT)
        alpha = 1.0 - tl.exp(-(_softplus((s_prev + s) / 2.0 - 1.0) * (t - t_prev)))
        tl.store(out_ptr + rays * (N - 1) + (k - 1), alpha * trans, mask=mask)
        trans = trans * (1.0 - alpha + 1e-10)
        s_prev = s
        t_prev = t


@triton.jit
def _next_depth(coarse_ptr, fine_ptr, rays, i, j, mask, N, F):
    """Smaller of the next coarse and the next fine depth (coarse first on ties) and the advanced pointers."""
    zc = tl.load(coarse_ptr + rays * N + i, mask=mask & (i < N), other=float("inf"))
    zf = tl.load(fine_ptr + rays * F + j, mask=mask & (j < F), other=float("inf"))
    take = zc <= zf
    return tl.where(take, zc, zf), i + take.to(tl.int32), j + (1 - take.to(tl.int32))


@triton.jit
def _fine_kernel(planes_ptr, origins_ptr, dirs_ptr, coarse_ptr, fine_ptr, rgb_ptr, depth_ptr, wsum_ptr,
                 w1t_ptr, b1_ptr, w2t_ptr, b2_ptr, w_sigma_ptr, b_sigma, R, M, N, F, H, W, scale,
                 WHITE_BACK: tl.constexpr, C: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr,
                 DOT: tl.constexpr):
    rays, mask, base, ox, oy, oz, dx, dy, dz, cols, w1t, b1, w2t, b2 = _ray_setup(
        origins_ptr, dirs_ptr, w1t_ptr, b1_ptr, w2t_ptr, b2_ptr, R, M, H, W, C, HIDDEN, BLOCK)
    w_sigma = tl.load(w_sigma_ptr + tl.arange(0, HIDDEN))
    # 1. first sample of the merged list
    i = tl.full([BLOCK], 0, tl.int32)
    j = tl.full([BLOCK], 0, tl.int32)
    t_prev, i, j = _next_depth(coarse_ptr, fine_ptr, rays, i, j, mask, N, F)
    s_prev, c_prev = _sample(planes_ptr, base, H * W, ox, oy, oz, dx, dy, dz, t_prev, mask, scale, H, W, cols,
                             w1t, b1, w2t, b2, w_sigma, b_sigma, C, True, DOT)
    trans = tl.full([BLOCK], 1.0, tl.float32)
    rgb = tl.full([BLOCK, C], 0.0, tl.float32)
    depth = tl.full([BLOCK], 0.0, tl.float32)
    wsum = tl.full([BLOCK], 0.0, tl.float32)
    # 2. walk the merged sorted depths, compositing each interval
    for _ in range(1, N + F):
        t, i, j = _next_depth(coarse_ptr, fine_ptr, rays, i, j, mask, N, F)
        s, c = _sample(planes_ptr, base, H * W, ox, oy, oz, dx, dy, dz, t, mask, scale, H, W, cols,
                       w1t, b1, w2t, b2, w_sigma, b_sigma, C, True, DOT)
        alpha = 1.0 - tl.exp(-(_softplus((s_prev + s) / 2.0 - 1.0) * (t - t_prev)))
        w = alpha * trans
        rgb += w[:, None] * ((c_prev + c) / 2.0)
        depth += w * ((t_prev + t) / 2.0)
        wsum += w
        trans = trans * (1.0 - alpha + 1e-10)
        s_prev = s
        c_prev = c
        t_prev = t
    # 3. outputs: expected depth (NaN -> inf, clamped later), colours scaled to [-1, 1]
    depth = depth / wsum
    depth = tl.where(depth != depth, float("inf"), depth)
    if WHITE_BACK:
        rgb = rgb + 1.0 - wsum[:, None]
    rgb = rgb * 2.0 - 1.0
    tl.store(rgb_ptr + rays[:, None] * C + cols[None, :], rgb, mask=mask[:, None])
    tl.store(depth_ptr + rays, depth, mask=mask)
    tl.store(wsum_ptr + rays, wsum, mask=mask)


def prepare_planes(planes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B, 3, C, H, W] -> contiguous channels-last [B, 3, H, W, C] in ``dtype`` (bf16/fp16 halve the reads;
    the kernels accumulate in float32)."""
    return planes.to(dtype).permute(0, 1, 3, 4, 2).contiguous()


def prepare_decoder(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> tuple:
    """Effective decoder weights (gains applied; w1 [H, C], w2 [1 + C, H]) in the kernels' layout."""
    hidden, c = w1.shape
    if w2.shape != (1 + c, hidden) or c & (c - 1) or hidden & (hidden - 1) or c < 16 or hidden < 16:
        raise ValueError(f"triton renderer needs power-of-two feature/hidden sizes >= 16 and 1 + C outputs, got "
                         f"w1 {list(w1.shape)}, w2 {list(w2.shape)}")
    f32 = dict(dtype=torch.float32)
    return (w1.t().contiguous().to(**f32), b1.contiguous().to(**f32), w2[1:].t().contiguous().to(**f32),
            b2[1:].contiguous().to(**f32), w2[0].contiguous().to(**f32), float(b2[0]))


def _check(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.device.type != "cuda" and not INTERPRET:
            raise RuntimeError("the triton renderer needs CUDA tensors (or TRITON_INTERPRET=1 set before import)")


def _grid(rays: int, block: int) -> tuple[int]:
    return (triton.cdiv(rays, block),)


def coarse_weights(planes_cl: torch.Tensor, decoder: tuple, origins: torch.Tensor, dirs: torch.Tensor,
                   depths: torch.Tensor, box_warp: float, *, dot: str = "ieee", block_rays: int | None = None,
                   num_warps: int | None = None) -> torch.Tensor:
    """Compositing weights [R, N - 1] of the coarse samples at sorted depths [R, N] along rays [R, 3]
    (R = B * M rays, M per plane set, in batch order). ``dot``: ``tl.dot`` input precision of the decoder
    ("ieee" = float32, "tf32" faster on tensor cores)."""
    _check(planes_cl, depths)
    b, _, h, w, c = planes_cl.shape
    r, n = depths.shape
    out = torch.empty(r, n - 1, device=depths.device, dtype=torch.float32)
    block_rays, num_warps = block_rays or BLOCK_RAYS, num_warps or NUM_WARPS
    w1t, b1, w2t, b2, w_sigma, b_sigma = decoder
    _coarse_kernel[_grid(r, block_rays)](planes_cl, origins.contiguous(), dirs.contiguous(), depths.contiguous(),
                                         out, w1t, b1, w2t, b2, w_sigma, b_sigma, r, r // b, n, h, w, 2.0 / box_warp,
                                         C=c, HIDDEN=w1t.shape[1], BLOCK=block_rays, DOT=dot, num_warps=num_warps)
    return out


def fine_composite(planes_cl: torch.Tensor, decoder: tuple, origins: torch.Tensor, dirs: torch.Tensor,
                   depths: torch.Tensor, fine: torch.Tensor, box_warp: float, *, white_back: bool = False,
                   dot: str = "ieee", block_rays: int | None = None, num_warps: int | None = None
                   ) -> tuple[torch.Tensor, ...]:
    """Composite the merged sorted coarse [R, N] and fine [R, F] depths: (rgb [R, C] in [-1, 1],
    depth [R] (NaN -> inf, unclamped), weights_total [R])."""
    _check(planes_cl, depths, fine)
    b, _, h, w, c = planes_cl.shape
    r, n = depths.shape
    rgb = torch.empty(r, c, device=depths.device, dtype=torch.float32)
    depth = torch.empty(r, device=depths.device, dtype=torch.float32)
    wsum = torch.empty(r, device=depths.device, dtype=torch.float32)
    block_rays, num_warps = block_rays or BLOCK_RAYS, num_warps or NUM_WARPS
    w1t, b1, w2t, b2, w_sigma, b_sigma = decoder
    _fine_kernel[_grid(r, block_rays)](planes_cl, origins.contiguous(), dirs.contiguous(), depths.contiguous(),
                                       fine.contiguous(), rgb, depth, wsum, w1t, b1, w2t, b2, w_sigma, b_sigma,
                                       r, r // b, n, fine.shape[1], h, w, 2.0 / box_warp, WHITE_BACK=white_back,
                                       C=c, HIDDEN=w1t.shape[1], BLOCK=block_rays, DOT=dot, num_warps=num_warps)
    return rgb, depth, wsum
