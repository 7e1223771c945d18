"""EG3D volume rendering as pure functions (``eg3d:eg3d/training/volumetric_rendering/renderer.py``, ``ray_marcher.py``, ``ray_sampler.py``).

Every step is a plain function of tensors so it can be tested alone and replaced by a fused kernel:

1. :func:`ray_bundle` - camera -> ray origins/directions (OpenCV convention, row-major pixels).
2. :func:`coarse_depths` - stratified depths, jittered (``stochastic``) or mid-interval (``deterministic``).
3. :func:`sample_from_planes` + decoder - tri-plane features at the sample points.
4. :func:`ray_weights` / :func:`ray_march` - MipNeRF-style compositing over interval midpoints.
5. :func:`importance_depths` / :func:`sample_pdf` - inverse-CDF sampling of the coarse weights.
6. :func:`merge_samples` - coarse + fine samples sorted by depth, marched again.

:func:`render_rays` chains them (in chunks of rays to bound memory). Shapes: B batch, M rays per
sample, N samples per ray, C feature channels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F

Sampling = Literal["deterministic", "stochastic"]
SAMPLING_MODES = ("deterministic", "stochastic")
# decoder: plane features [B, 3, M, C] -> (colours [B, M, C'], raw densities [B, M, 1])
Decoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class RenderSettings:
    """How rays are sampled (defaults: the FFHQ-512 checkpoint's ``rendering_kwargs``)."""

    depth_resolution: int = 48
    """Coarse samples per ray (official inference uses 96)."""
    depth_resolution_importance: int = 48
    """Importance samples per ray; 0 = coarse pass only."""
    ray_start: float = 2.25
    ray_end: float = 3.3
    box_warp: float = 1.0
    """Side of the cube the tri-planes span (world units)."""
    sampling: Sampling = "deterministic"
    """'deterministic': mid-interval depths and u = linspace(0, 1) (what the parity data was made with);
    'stochastic': the official random jitter and random u."""
    white_back: bool = False
    chunk_rays: int = 16384
    """Rays (summed over the batch) rendered at once; 0 = all at once. Does not change the result."""

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        if self.depth_resolution < 2:
            raise ValueError(f"depth_resolution must be >= 2, got {self.depth_resolution}")
        if self.depth_resolution_importance and self.depth_resolution < 4:
            raise ValueError("importance sampling needs depth_resolution >= 4")


@dataclass(frozen=True)
class RenderResult:
    """Per-ray outputs: features [B, M, C] in [-1, 1], depth [B, M, 1], weights_total [B, M, 1]."""

    features: torch.Tensor
    depth: torch.Tensor
    weights_total: torch.Tensor


def ray_bundle(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through the pixel centres: origins and unit directions, both [B, R*R, 3], row-major.

    ``intrinsics`` are normalised (fx, fy in image widths; cx, cy in [0, 1]); skew is honoured.
    """
    b = cam2world.shape[0]
    dev = cam2world.device
    # 1. pixel centres in [0, 1]: u along columns (x), v along rows (y)
    centres = torch.arange(resolution, dtype=torch.float32, device=dev) * (1.0 / resolution) + (0.5 / resolution)
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    x_cam = u.reshape(1, -1).expand(b, -1)
    y_cam = v.reshape(1, -1).expand(b, -1)
    z_cam = torch.ones_like(x_cam)
    # 2. lift to camera space
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    x_lift = (x_cam - cx + cy * sk / fy - sk * y_cam / fy) / fx * z_cam
    y_lift = (y_cam - cy) / fy * z_cam
    cam_points = torch.stack((x_lift, y_lift, z_cam, torch.ones_like(z_cam)), dim=-1)
    # 3. to world space
    world = torch.bmm(cam2world, cam_points.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
    origin = cam2world[:, :3, 3]
    dirs = F.normalize(world - origin[:, None, :], dim=2)
    return origin[:, None, :].expand(-1, dirs.shape[1], -1), dirs


def coarse_depths(
    batch: int,
    num_rays: int,
    depth_resolution: int,
    ray_start: float,
    ray_end: float,
    *,
    sampling: Sampling = "deterministic",
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Stratified depths [B, M, N, 1]: ``linspace(start, end, N) + U * (end - start)/(N - 1)``.

    U ~ U(0, 1) per sample (official, ``stochastic``) or U = 0.5 (``deterministic``); the last depth
    then lies half a step beyond ``ray_end``, as in the official code.
    """
    t = torch.linspace(ray_start, ray_end, depth_resolution, device=device)
    t = t.reshape(1, 1, depth_resolution, 1).repeat(batch, num_rays, 1, 1)
    delta = (ray_end - ray_start) / (depth_resolution - 1)
    if sampling == "stochastic":
        jitter = torch.rand(t.shape, generator=generator, device=device, dtype=t.dtype)
    else:
        jitter = torch.full_like(t, 0.5)
    return t + jitter * delta


def sample_points(origins: torch.Tensor, dirs: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Points ``o + t d`` for depths [B, M, N, 1] -> [B, M*N, 3]."""
    return (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(origins.shape[0], -1, 3)


def project_onto_planes(coords: torch.Tensor) -> torch.Tensor:
    """[B, M, 3] -> grid coordinates [B, 3, M, 2] for planes (x, y), (x, z), (z, x).

    The third plane reads (z, x), not (y, z): EG3D's plane-axis quirk that the weights depend on.
    """
    x, y, z = coords.unbind(-1)
    return torch.stack([torch.stack([x, y], -1), torch.stack([x, z], -1), torch.stack([z, x], -1)], dim=1)


def sample_from_planes(planes: torch.Tensor, coords: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Bilinear tri-plane lookup: planes [B, 3, C, H, W], coords [B, M, 3] -> features [B, 3, M, C].

    Coordinates are scaled by ``2 / box_warp`` (the box maps to [-1, 1]); outside is zero
    (``grid_sample``, ``align_corners=False``). Returns a view (no copy of the big tensor).
    """
    b, n_planes, c, h, w = planes.shape
    grid = project_onto_planes((2 / box_warp) * coords).reshape(b * n_planes, 1, -1, 2)
    out = F.grid_sample(planes.reshape(b * n_planes, c, h, w), grid.to(planes.dtype), mode="bilinear",
                        padding_mode="zeros", align_corners=False)  # [B*3, C, 1, M]
    return out.view(b, n_planes, c, -1).permute(0, 1, 3, 2)


def ray_weights(densities: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Compositing weights [B, M, K-1, 1] of the K-1 intervals between K depth-sorted samples.

    ``sigma = softplus(density_mid - 1)``, ``alpha = 1 - exp(-sigma * delta)``,
    ``w_k = alpha_k * prod_{j<k} (1 - alpha_j + 1e-10)`` (all the coarse pass needs).
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    sigma = F.softplus(densities_mid - 1)
    alpha = 1 - torch.exp(-(sigma * deltas))
    shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    return alpha * torch.cumprod(shifted, -2)[:, :, :-1]


def ray_march(
    colors: torch.Tensor,
    densities: torch.Tensor,
    depths: torch.Tensor,
    *,
    white_back: bool = False,
    clamp_depth: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite K depth-sorted samples per ray over their K-1 intervals (MipRayMarcher2).

    colors [B, M, K, C], densities [B, M, K, 1] (raw), depths [B, M, K, 1] ->
    (rgb [B, M, C] scaled to [-1, 1], depth [B, M, 1], weights [B, M, K-1, 1]).
    ``sigma = softplus(density_mid - 1)``, ``alpha = 1 - exp(-sigma * delta)``,
    ``w_k = alpha_k * prod_{j<k} (1 - alpha_j + 1e-10)``. Depth = weighted mean depth (NaN -> inf),
    clamped to the min/max of ``depths`` over the whole tensor when ``clamp_depth``.
    """
    # 1. compositing weights of the intervals
    weights = ray_weights(densities, depths)
    # 2. interval midpoints
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    # 3. composite
    rgb = torch.sum(weights * colors_mid, -2)
    weight_total = weights.sum(2)
    depth = torch.nan_to_num(torch.sum(weights * depths_mid, -2) / weight_total, float("inf"))
    if clamp_depth:
        depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    if white_back:
        rgb = rgb + 1 - weight_total
    return rgb * 2 - 1, depth, weights


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, u: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF sampling (NeRF): bins [R, n+1], weights [R, n], u [R, S] in [0, 1] -> samples [R, S].

    ``cdf = [0, cumsum(w + eps) / sum]``; each u is mapped linearly inside the bin where the cdf
    crosses it (denominators below ``eps`` count as 1).
    """
    n = weights.shape[1]
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    u = u.contiguous()
    idx = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(idx - 1, 0)
    above = torch.clamp_max(idx, n)
    cdf_below, cdf_above = torch.gather(cdf, 1, below), torch.gather(cdf, 1, above)
    bins_below, bins_above = torch.gather(bins, 1, below), torch.gather(bins, 1, above)
    denom = cdf_above - cdf_below
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_below + (u - cdf_below) / denom * (bins_above - bins_below)


def importance_depths(
    depths: torch.Tensor,
    weights: torch.Tensor,
    n_importance: int,
    *,
    sampling: Sampling = "deterministic",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fine depths [B, M, n_importance, 1] from coarse depths [B, M, N, 1] and weights [B, M, N-1, 1].

    Weights are smoothed (max-pool 2, avg-pool 2, + 0.01); bins are the coarse interval midpoints;
    the pdf uses the inner weights ``[1:-1]`` (the official pairing, so the last bin is never reached).
    ``u`` = linspace(0, 1) (``deterministic``) or U(0, 1) (``stochastic``). No gradient flows.
    """
    with torch.no_grad():
        b, m, n, _ = depths.shape
        z = depths.reshape(b * m, n)
        w = weights.reshape(b * m, -1).unsqueeze(1).float()
        w = F.avg_pool1d(F.max_pool1d(w, 2, 1, padding=1), 2, 1).squeeze(1) + 0.01
        bins = 0.5 * (z[:, :-1] + z[:, 1:])
        if sampling == "stochastic":
            u = torch.rand(b * m, n_importance, generator=generator, device=depths.device)
        else:
            u = torch.linspace(0, 1, n_importance, device=depths.device).expand(b * m, n_importance)
        return sample_pdf(bins, w[:, 1:-1], u).detach().reshape(b, m, n_importance, 1)


def merge_samples(depths1: torch.Tensor, colors1: torch.Tensor, densities1: torch.Tensor, depths2: torch.Tensor,
                  colors2: torch.Tensor, densities2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate two sample sets along the sample axis and sort every ray by depth."""
    depths = torch.cat([depths1, depths2], dim=-2)
    colors = torch.cat([colors1, colors2], dim=-2)
    densities = torch.cat([densities1, densities2], dim=-2)
    _, order = torch.sort(depths, dim=-2)
    depths = torch.gather(depths, -2, order)
    colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
    densities = torch.gather(densities, -2, order)
    return depths, colors, densities


def run_decoder(planes: torch.Tensor, decoder: Decoder, origins: torch.Tensor, dirs: torch.Tensor,
                depths: torch.Tensor, box_warp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Colours [B, M, N, C] and raw densities [B, M, N, 1] at depths [B, M, N, 1]."""
    b, m, n, _ = depths.shape
    colors, densities = decoder(sample_from_planes(planes, sample_points(origins, dirs, depths), box_warp))
    return colors.reshape(b, m, n, -1), densities.reshape(b, m, n, 1)


def _render_chunk(planes: torch.Tensor, decoder: Decoder, origins: torch.Tensor, dirs: torch.Tensor,
                  settings: RenderSettings, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    b, m, _ = origins.shape
    # 1. coarse pass
    depths = coarse_depths(b, m, settings.depth_resolution, settings.ray_start, settings.ray_end,
                           sampling=settings.sampling, generator=generator, device=origins.device)
    colors, densities = run_decoder(planes, decoder, origins, dirs, depths, settings.box_warp)
    # 2. importance pass
    n_imp = settings.depth_resolution_importance
    if n_imp > 0:
        weights = ray_weights(densities, depths)
        fine = importance_depths(depths, weights, n_imp, sampling=settings.sampling, generator=generator)
        colors_f, densities_f = run_decoder(planes, decoder, origins, dirs, fine, settings.box_warp)
        depths, colors, densities = merge_samples(depths, colors, densities, fine, colors_f, densities_f)
    # 3. final composite (depth clamped later over the whole batch, as the official code does)
    rgb, depth, weights = ray_march(colors, densities, depths, white_back=settings.white_back, clamp_depth=False)
    return rgb, depth, weights.sum(2), depths.min(), depths.max()


def render_rays(planes: torch.Tensor, decoder: Decoder, origins: torch.Tensor, dirs: torch.Tensor,
                settings: RenderSettings, *, generator: torch.Generator | None = None) -> RenderResult:
    """Render rays [B, M, 3] through tri-planes [B, 3, C, H, W] with coarse + importance sampling."""
    b, m, _ = origins.shape
    step = m if settings.chunk_rays <= 0 else max(1, settings.chunk_rays // b)
    parts = [_render_chunk(planes, decoder, origins[:, s:s + step], dirs[:, s:s + step], settings, generator)
             for s in range(0, m, step)]
    rgb = torch.cat([p[0] for p in parts], 1)
    depth = torch.cat([p[1] for p in parts], 1)
    weights_total = torch.cat([p[2] for p in parts], 1)
    lo = torch.stack([p[3] for p in parts]).min()
    hi = torch.stack([p[4] for p in parts]).max()
    return RenderResult(features=rgb, depth=torch.clamp(depth, lo, hi), weights_total=weights_total)
