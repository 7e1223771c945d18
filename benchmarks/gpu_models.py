"""CUDA correctness and speed of the EG3D generator and TriPlaneNet (issues 2 and 3).

Fills full-size models with the parity fill rule, then on the GPU:
1. EG3D parity: CUDA (TF32 off, float32) vs the official golden outputs and vs our own CPU output.
2. One 512x512 ``G.synthesis`` at batch 1 and 8 with 96/96 depth samples: ms per call.
3. TriPlaneNet v1 encode + one novel-view render at batch 1, 8, 16 with 96/96: frames/s, peak memory.

    VIDTRIPLANE_SHARED=/path/to/shared python benchmarks/gpu_models.py [--skip-cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import torch

from vidtriplane.geometry import camera
from vidtriplane.models.eg3d import EG3DGenerator
from vidtriplane.models.triplanenet import TriPlaneNet

SALT = "public-v1"


def load_fill_rule(shared: Path):
    spec = importlib.util.spec_from_file_location("fill_rule", shared / "parity" / "fill_rule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def filled_triplanenet(fill_rule) -> TriPlaneNet:
    net = TriPlaneNet()
    spec = {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
    net.load_state_dict(fill_rule.fill_state_dict(spec, SALT), strict=True)
    net.set_latent_avg(fill_rule.fill("latent_avg", (14, 512), torch.float32, SALT))
    return net.eval()


def timed(fn, device, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up
    torch.cuda.synchronize(device)
    times = []
    for _ in range(repeat):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], out


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-cpu", action="store_true", help="skip the CPU reference render")
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 for the timings (parity always runs without)")
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    shared = Path(os.environ.get("VIDTRIPLANE_SHARED", "../shared"))
    fill_rule = load_fill_rule(shared)
    from safetensors.torch import load_file

    golden = load_file(str(shared / "parity" / "golden.safetensors"))
    manifest = json.loads((shared / "parity" / "manifest.json").read_text())["arrays"]
    device = torch.device("cuda")
    report: dict = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__}
    print(report, flush=True)

    net = filled_triplanenet(fill_rule)
    G: EG3DGenerator = net.decoder
    z, c = golden["input.z"], golden["input.c"]

    # 1. parity on CUDA (48/48 deterministic, the golden settings)
    ws_cpu = G.mapping(z, c)
    if not args.skip_cpu:
        t0 = time.perf_counter()
        out_cpu = G.synthesis(ws_cpu, c)
        report["cpu_synthesis_b2_48_s"] = time.perf_counter() - t0
    net = net.to(device)
    G = net.decoder
    ws = G.mapping(z.to(device), c.to(device))
    out = G.synthesis(ws, c.to(device))
    checks = {
        "c.ws": ws,
        "c.image_sub4": out.image[:, :, ::4, ::4],
        "c.image_raw": out.image_raw,
        "c.image_depth": out.image_depth,
        "c.weights_total": out.weights_total,
    }
    parity = {}
    for key, value in checks.items():
        err = (value.float().cpu() - golden[key]).abs().max().item()
        parity[key] = {"max_err": err, "atol": manifest[key]["atol"], "err_over_atol": err / manifest[key]["atol"]}
    if not args.skip_cpu:
        parity["cuda_vs_cpu_image_max_err"] = (out.image.cpu() - out_cpu.image).abs().max().item()
        parity["cuda_vs_cpu_depth_max_err"] = (out.image_depth.cpu() - out_cpu.image_depth).abs().max().item()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out_tf32 = G.synthesis(G.mapping(z.to(device), c.to(device)), c.to(device))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    diff = (out_tf32.image - out.image).abs()
    parity["tf32_vs_fp32_image_max_8bit_levels"] = diff.max().item() * 127.5
    parity["tf32_vs_fp32_image_mean_8bit_levels"] = diff.mean().item() * 127.5
    report["parity_cuda"] = parity
    print(json.dumps(parity, indent=1), flush=True)

    # 2. one 512 render, 96/96
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True
    report["tf32"] = args.tf32
    synth = {}
    for batch in (1, 8):
        wsb = ws[:1].expand(batch, -1, -1).contiguous()
        cb = c[:1].to(device).expand(batch, -1).contiguous()
        torch.cuda.reset_peak_memory_stats(device)
        t, _ = timed(lambda: G.synthesis(wsb, cb, depth_samples=96, importance_samples=96), device, args.repeat)
        synth[batch] = {"ms_per_call": 1000 * t, "ms_per_image": 1000 * t / batch,
                        "peak_GiB": torch.cuda.max_memory_allocated(device) / 2**30}
        print("synthesis", batch, synth[batch], flush=True)
    report["synthesis_96_96"] = synth

    # 3. TriPlaneNet encode + one novel view, 96/96
    x = golden["input.x"].float().to(device)
    c_novel = camera.lookat_label(0.3, 0.0).to(device)
    tpn = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        xb = x[:1].expand(batch, -1, -1, -1).contiguous()
        cb = c[:1].to(device).expand(batch, -1).contiguous()
        cn = c_novel.expand(batch, -1).contiguous()

        def step():
            inv = net.encode(xb, cb, depth_samples=96, importance_samples=96)
            return net.render(inv, cn, depth_samples=96, importance_samples=96).image

        torch.cuda.reset_peak_memory_stats(device)
        try:
            t, _ = timed(step, device, args.repeat)
        except torch.OutOfMemoryError as exc:
            tpn[batch] = {"error": f"OOM: {exc}"[:200]}
            torch.cuda.empty_cache()
            continue
        tpn[batch] = {"ms_per_batch": 1000 * t, "frames_per_s": batch / t,
                      "peak_GiB": torch.cuda.max_memory_allocated(device) / 2**30}
        print("triplanenet", batch, tpn[batch], flush=True)
    report["triplanenet_encode_plus_novel_96_96"] = tpn

    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
