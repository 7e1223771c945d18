"""Training speed of the full-size TriPlaneNet v1: steps per second and peak memory (issue 10).

Runs the real training loop (``vidtriplane.train.loop.training_loop``) on generated weights (EG3D and the
encoders random, so no weight file is needed) with random-weight LPIPS and ArcFace networks standing in for
the real ones (same cost), synthetic samples only, 48 + 48 depth samples like the official training, and
reads the per-step times from ``metrics.jsonl`` (the first ``--warmup`` steps are left out). ``--phase``
picks the schedule: ``psp`` (steps < 20k: pSp only) or ``both`` (both branches, the 20k-500k phase).

    python benchmarks/train_speed.py --device cpu --batch 1 --steps 3
    python benchmarks/train_speed.py --device cuda --batch 4 --steps 20 --precision bf16 --json out.json
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def random_loss_nets(cfg, device):
    from vidtriplane.models.arcface import FaceEmbedder, FaceEmbedderConfig
    from vidtriplane.models.lpips import LPIPS
    from vidtriplane.train.losses import LossNets

    return LossNets(lpips=LPIPS().eval().requires_grad_(False).to(device),
                    arcface=FaceEmbedder(FaceEmbedderConfig.ir_se50()).eval().requires_grad_(False).to(device))


def run(args) -> dict:
    from vidtriplane.config import resolve
    from vidtriplane.train import loop
    from vidtriplane.train.logs import read_metrics

    if args.loss_nets == "random":
        loop.build_loss_nets = random_loss_nets  # same compute as the registry networks, no files needed
    phase = ["train.add_triplanenet=0"] if args.phase == "both" else ["train.add_triplanenet=100000"]
    overrides = [
        "model.eg3d=generated", "model.init=none", "loss.networks=none", "data.synthetic_ratio=1",
        f"data.workers={args.workers}", f"train.batch_size={args.batch}", f"train.max_steps={args.warmup + args.steps}",
        "train.log_every=1", "train.val_batches=0", "train.image_every=1000000", "train.save_every=1000000",
        f"runtime.device={args.device}", f"runtime.precision={args.precision}",
        f"runtime.gradient_checkpointing={str(args.checkpointing).lower()}", *phase, *args.set]
    cfg = resolve("train", configs=["train-v1"], overrides=overrides)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        loop.training_loop(cfg, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - t0
        rows = read_metrics(Path(tmp) / "run" / "metrics.jsonl")
    seconds = [r["seconds"] for r in rows[args.warmup:]]
    median = statistics.median(seconds)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "batch": args.batch, "phase": args.phase, "precision": args.precision,
        "gradient_checkpointing": args.checkpointing, "loss_nets": args.loss_nets, "steps_timed": len(seconds),
        "seconds_per_step_median": median, "seconds_per_step": seconds,
        "steps_per_second": 1.0 / median, "samples_per_second": args.batch / median, "wall_seconds": wall,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if device.type == "cuda":
        result["peak_cuda_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--phase", choices=["psp", "both"], default="both")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of the encoder trunks")
    ap.add_argument("--loss-nets", choices=["random", "none"], default="random")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides key=value")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args()
    result = run(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(f"{result['device']}: {result['steps_per_second']:.3f} steps/s ({result['samples_per_second']:.2f} "
          f"samples/s) at batch {args.batch}, {args.phase}, {args.precision}; peak RSS {result['peak_rss_gib']:.1f} GiB"
          + (f", peak CUDA {result['peak_cuda_gib']:.1f} GiB" if "peak_cuda_gib" in result else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
