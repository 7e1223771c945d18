"""Quality against speed of fewer depth samples: 96+96 (official inference), 48+48 (training), 24+24.

Full-size TriPlaneNet v1 (weights as in benchmarks/cpu_fast.py), one fixed inversion rendered from a novel
view; PSNR of the final 512 px image and of the 128 px raw RGB against the 96+96 render (random weights:
real faces have sharper surfaces, so treat the dB as indicative), and the time of one render (min of
``--repeats``). Runs on the CPU or CUDA.

    python benchmarks/depth_samples.py --backend compiled --repeats 3
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from cpu_fast import build_net

from vidtriplane import runtime, speed
from vidtriplane.models.compile import compile_network


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="compiled")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--samples", default="96/96,48/48,24/24")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    applied = runtime.configure(device, tf32=False)
    net, weights = build_net()
    net = net.to(device)
    if args.backend != "eager":
        compile_network(net)  # as benchmarks/cpu_fast.py: encoders, backbone and SR compiled too
    x, c, c_novel = speed.model_inputs(1, 256, device)
    kw = dict(backend=args.backend, precision=args.precision, sampling="deterministic")
    counts = [tuple(int(v) for v in s.split("/")) for s in args.samples.split(",")]
    rows = []
    with torch.inference_mode():
        inv = net.encode(x, c, depth_samples=96, importance_samples=96, **kw)
        renders = {}
        for n, f in counts:
            def once(n=n, f=f):
                return net.render(inv, c_novel, depth_samples=n, importance_samples=f, **kw)
            seconds, out = speed.time_call(once, device, warmup=1, repeats=args.repeats)
            renders[(n, f)] = (min(seconds), out)
        best_s, best = renders[counts[0]]
        for (n, f), (seconds, out) in renders.items():
            row = {"samples": f"{n}/{f}", "render_s": seconds, "speedup": best_s / seconds,
                   "psnr_image_db": speed.psnr(out.image, best.image),
                   "psnr_raw_db": speed.psnr(out.image_raw, best.image_raw)}
            rows.append(row)
            print(f"{row['samples']:>6}: {seconds:7.3f} s (x{row['speedup']:.2f})  PSNR image "
                  f"{row['psnr_image_db'] or float('inf'):.1f} dB, raw {row['psnr_raw_db'] or float('inf'):.1f} dB",
                  flush=True)
    doc = {"device": speed.device_name(device), "weights": weights, "backend": args.backend,
           "precision": args.precision, "runtime": applied, "reference": f"{counts[0][0]}/{counts[0][1]}",
           "results": rows, "measured": time.strftime("%Y-%m-%d %H:%M")}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
