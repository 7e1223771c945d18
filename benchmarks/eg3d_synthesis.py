"""Time one EG3D ``G.synthesis`` (backbone + rendering + super-resolution) on CPU or CUDA.

Random weights (speed does not depend on them), deterministic sampling, float32, no autograd.

    python benchmarks/eg3d_synthesis.py                       # CPU, batches 1,2, samples 48 and 96
    python benchmarks/eg3d_synthesis.py --device cuda --batches 1,8 --repeat 5
"""
from __future__ import annotations

import argparse
import time

import torch

from vidtriplane.geometry.camera import lookat_label
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--samples", default="48,96", help="depth samples (coarse = importance)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    torch.manual_seed(0)
    G = EG3DGenerator(EG3DConfig()).eval().to(device)
    print(f"device {device} threads {torch.get_num_threads()} torch {torch.__version__}")
    for batch in [int(b) for b in args.batches.split(",")]:
        c = lookat_label(torch.linspace(-0.3, 0.3, batch), torch.zeros(batch)).to(device)
        ws = G.mapping(torch.randn(batch, 512, device=device), c)
        G.synthesis(ws, c, depth_samples=8, importance_samples=8)  # warm-up
        for n in [int(s) for s in args.samples.split(",")]:
            times, cpu = [], []
            for _ in range(args.repeat):
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                G.synthesis(ws, c, depth_samples=n, importance_samples=n)
                _sync(device)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            print(f"batch {batch} samples {n}/{n}: {min(times):.2f} s wall, {min(cpu):.2f} s process CPU per call "
                  f"(best of {args.repeat})", flush=True)


if __name__ == "__main__":
    main()
