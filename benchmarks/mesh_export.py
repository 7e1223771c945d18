"""Time the shape export (density grid + marching cubes) of one full-size tri-plane set on CPU or CUDA.

Random FFHQ-512-shaped planes [1, 96, 256, 256] and a random OSG decoder (speed does not depend on the
weights); the marching-cubes level is the grid median so that a surface exists.

    python benchmarks/mesh_export.py                            # CPU, grid 128 and 256
    python benchmarks/mesh_export.py --device cuda --resolutions 256 --chunk 4194304
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vidtriplane.geometry.mesh import density_grid, marching_cubes, trim_border, triplane_density
from vidtriplane.models.eg3d.decoder import OSGDecoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolutions", default="128,256")
    ap.add_argument("--chunk", type=int, default=1 << 19)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    planes = torch.randn(1, 96, 256, 256, device=device)
    decoder = OSGDecoder(32).to(device).eval()
    density = triplane_density(planes, decoder, box_warp=1.0)
    print(f"device {device} threads {torch.get_num_threads()} torch {torch.__version__} chunk {args.chunk}")
    for res in (int(r) for r in args.resolutions.split(",")):
        t0 = time.perf_counter()
        grid = trim_border(density_grid(density, resolution=res, chunk=args.chunk))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        inner = grid[grid > -1000]
        mesh = marching_cubes(grid, level=float(np.median(inner)))
        t2 = time.perf_counter()
        print(f"grid {res}^3: density {t1 - t0:.2f} s, marching cubes {t2 - t1:.2f} s, "
              f"{len(mesh.vertices)} vertices, {len(mesh.faces)} faces")


if __name__ == "__main__":
    main()
