"""CPU speed of the fast paths against today's eager code (issue 11 targets), full-size TriPlaneNet v1.

Weights: the shared parity fill rule when ``$VIDTRIPLANE_SHARED`` (or ../shared) has it, else seeded
random weights. Batch 1, 96 + 96 samples, deterministic sampling. Two measurements per configuration:

* ``render``  - one ``net.render(inv, c_novel)`` (volume rendering + super-resolution) of a fixed inversion;
* ``forward`` - ``encode`` + one novel-view render (the official per-frame work).

Non-eager rows also run the encoders, backbone and super-resolution through ``compile_network``.

Configurations run interleaved, ``--repeats`` rounds, and the minimum is reported (other processes share
the machine; the minimum is the least disturbed run). PSNR is against eager float32.

    python benchmarks/cpu_fast.py --repeats 5 --json cpu_fast.json
    python benchmarks/cpu_fast.py --configs eager/fp32,compiled/bf16 --what render
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import torch

from vidtriplane import runtime, speed
from vidtriplane.models.compile import compile_network
from vidtriplane.models.triplanenet import TriPlaneNet

SALT = "public-v1"


def build_net() -> tuple[TriPlaneNet, str]:
    """Full-size v1 with the parity fill (if the shared folder is there) or seeded random weights."""
    shared = Path(os.environ.get("VIDTRIPLANE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    rule = shared / "parity" / "fill_rule.py"
    torch.manual_seed(0)
    net = TriPlaneNet()
    if not rule.exists():
        return net.eval(), "seeded random"
    spec = importlib.util.spec_from_file_location("fill_rule", rule)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sd = module.fill_state_dict({k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}, SALT)
    net.load_state_dict(sd, strict=True)
    net.set_latent_avg(module.fill("latent_avg", (14, 512), torch.float32, SALT))
    return net.eval(), "parity fill rule"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="eager/fp32,compiled/fp32,compiled/bf16", help="comma-separated BACKEND/PRECISION")
    ap.add_argument("--no-compile-network", action="store_true",
                    help="compile only the renderer (default: also the encoders, backbone and SR for non-eager rows)")
    ap.add_argument("--what", default="render,forward")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", default="96/96")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    applied = runtime.configure("cpu", threads=args.threads)
    coarse, fine = (int(v) for v in args.samples.split("/"))
    net, weights = build_net()
    x, c, c_novel = speed.model_inputs(1, 256, torch.device("cpu"))
    kw = dict(depth_samples=coarse, importance_samples=fine, sampling="deterministic")
    with torch.inference_mode():
        inv = net.encode(x, c, **kw)
    configs = [tuple(s.split("/")) for s in args.configs.split(",")]
    if not args.no_compile_network:
        compile_network(net)

    def call(what: str, backend: str, precision: str):
        k = dict(kw, backend=backend, precision=precision)
        with torch.inference_mode():
            if what == "render":
                return net.render(inv, c_novel, **k).image
            return net.render(net.encode(x, c, **k), c_novel, **k).image

    results = []
    for what in args.what.split(","):
        reference = call(what, "eager", "fp32")
        times: dict[tuple[str, str], list[float]] = {cfg: [] for cfg in configs}
        images = {}
        for cfg in configs:  # warm-up: compilation happens here
            images[cfg] = call(what, *cfg)
        for _ in range(args.repeats):
            for cfg in configs:
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                images[cfg] = call(what, *cfg)
                times[cfg].append((time.perf_counter() - start_wall, time.process_time() - start_cpu))
        base = min(t for t, _ in times[("eager", "fp32")]) if ("eager", "fp32") in times else None
        for cfg in configs:
            wall = min(t for t, _ in times[cfg])
            row = {"what": what, "backend": cfg[0], "precision": cfg[1], "min_s": wall,
                   "median_s": sorted(t for t, _ in times[cfg])[len(times[cfg]) // 2],
                   "min_cpu_s": min(p for _, p in times[cfg]),
                   "speedup_vs_eager_fp32": base / wall if base else None,
                   "psnr_db_vs_eager_fp32": speed.psnr(images[cfg], reference)}
            results.append(row)
            psnr = row["psnr_db_vs_eager_fp32"]
            print(f"{what:8s} {cfg[0]:9s} {cfg[1]:9s} min {wall:7.3f} s  median {row['median_s']:7.3f} s  "
                  f"cpu {row['min_cpu_s']:7.3f} s  x{row['speedup_vs_eager_fp32'] or 0:5.2f}  "
                  f"PSNR {'identical' if psnr is None else f'{psnr:.1f} dB'}", flush=True)
    doc = {"device": speed.device_name(torch.device("cpu")), "weights": weights, "runtime": applied,
           "network_compiled": not args.no_compile_network, "load_average": os.getloadavg(),
           "samples": args.samples, "repeats": args.repeats, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
