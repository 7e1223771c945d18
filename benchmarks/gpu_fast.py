"""ONE script for a CUDA machine (issue 11): correctness of every GPU path, a kernel-size sweep, then the
speed table - TriPlaneNet v1, 96 + 96 samples, encode + one novel view, batch 1 / 8 / 16, each
backend x precision: frames/s, ms per frame, peak memory, PSNR against eager float32.

Budgeted to finish in about 8 minutes on an H100/H200: parts run in priority order and anything that
would start after ``--budget-s`` is skipped (and listed). Results are written after every part to
``$OUT/gpu_fast.json`` (or ``--json``), so a timeout still leaves the finished parts.

1. checks   triton kernels vs eager on small shapes (deterministic, stochastic, bf16 planes), the compiled
            renderer vs eager, a full-size 96/96 render triton vs eager (TF32 off: strict float32);
2. sweep    rays per program x warps of the triton kernels (render only, batch 8); the best is used after;
3. table    eager and triton x fp32 / bf16 / fp16 x batch 1 / 8 / 16;
4. compile  whole-network torch.compile (mode default, then reduce-overhead = CUDA graphs) with the best
            renderer in bf16, batch 1 and 16;
5. compiled the ``compiled`` (torch.compile'd) renderer rows, fp32 and bf16, batch 1 and 16.

    python benchmarks/gpu_fast.py                 # everything, as budgeted
    python benchmarks/gpu_fast.py --budget-s 300 --batches 1,8
    TRITON_INTERPRET=1 python benchmarks/gpu_fast.py --smoke   # the control flow on a CPU, tiny models
"""
from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidtriplane import runtime, speed
from vidtriplane.geometry.camera import lookat_label
from vidtriplane.models.compile import compile_network, uncompile_network
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator
from vidtriplane.models.eg3d.backends import BackendUnavailable, render_rays_with
from vidtriplane.models.eg3d.renderer import RenderSettings, ray_bundle, render_rays
from vidtriplane.models.triplanenet import TriPlaneNet, TriPlaneNetConfig


@dataclass(frozen=True)
class Setup:
    """Model sizes and shapes: the real run (full size, 96 + 96) or ``--smoke`` (tiny, CPU)."""

    device: torch.device
    eg3d: EG3DConfig = field(default_factory=EG3DConfig)
    net: TriPlaneNetConfig = field(default_factory=TriPlaneNetConfig)
    samples: tuple[int, int] = (96, 96)
    small_rays: int = 16
    """Side of the ray grid of the small-shape checks."""
    sweep: tuple[tuple[int, int], ...] = tuple((b, w) for b in (16, 32, 64) for w in (2, 4, 8))
    """(rays per program, warps) of the triton kernels to try."""

    @classmethod
    def smoke(cls) -> "Setup":
        tiny = TriPlaneNetConfig.tiny()
        eg3d = EG3DConfig.tiny().replace(neural_rendering_resolution=8)
        return cls(torch.device("cpu"), eg3d, TriPlaneNetConfig(psp=tiny.psp, encoder=tiny.encoder, eg3d=eg3d),
                   (6, 6), 4, ((16, 2), (32, 4)))


class Budget:
    """Seconds left of the run; parts that would start too late are skipped and recorded."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds, self.skipped = time.perf_counter(), seconds, []

    def allows(self, what: str, needs: float) -> bool:
        left = self.seconds - (time.perf_counter() - self.start)
        if left < needs:
            self.skipped.append(f"{what} (needs ~{needs:.0f} s, {left:.0f} s left)")
            print(f"SKIPPED {what}: {left:.0f} s left", flush=True)
            return False
        return True


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def generator_and_planes(setup: Setup, batch: int) -> tuple[EG3DGenerator, torch.Tensor, torch.Tensor]:
    """Seeded generator, backbone planes of ``batch`` random codes, cameras spread in yaw."""
    device = setup.device
    torch.manual_seed(0)
    G = EG3DGenerator(setup.eg3d).eval().to(device)
    ws = G.mapping(torch.randn(batch, 512, device=device), torch.zeros(batch, 25, device=device))
    c = lookat_label(torch.linspace(-0.3, 0.3, batch), torch.zeros(batch)).to(device)
    return G, G.backbone_planes(ws), c


@torch.inference_mode()
def checks(setup: Setup) -> dict:
    """Small-shape and full-size agreement of the triton and compiled renderers with eager."""
    device = setup.device
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out: dict = {}
    G, planes, c = generator_and_planes(setup, 2)
    tri = planes.reshape(2, 3, planes.shape[1] // 3, *planes.shape[-2:])
    # 1. small shapes through the renderer entry point (16 x 16 rays, 12 + 12 samples)
    origins, dirs = ray_bundle(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), setup.small_rays)
    for name, settings in {
        "deterministic": RenderSettings(depth_resolution=12, depth_resolution_importance=12),
        "stochastic_chunked": RenderSettings(depth_resolution=12, depth_resolution_importance=12,
                                             sampling="stochastic", chunk_rays=200),
        "coarse_only": RenderSettings(depth_resolution=12, depth_resolution_importance=0),
        "white_back": RenderSettings(depth_resolution=12, depth_resolution_importance=12, white_back=True),
    }.items():
        ref = render_rays(tri, G.decoder, origins, dirs, settings, generator=torch.Generator(device).manual_seed(1))
        for backend, precision in (("triton", "fp32"), ("triton", "bf16"), ("compiled", "fp32")):
            if backend == "compiled" and name != "deterministic":
                continue  # each shape compiles for a while; the CPU tests cover the other settings
            got = render_rays_with(backend, tri, G.decoder, origins, dirs, settings, precision=precision,
                                   generator=torch.Generator(device).manual_seed(1))
            out[f"small/{name}/{backend}/{precision}"] = {
                "features_max_err": max_err(got.features, ref.features), "depth_max_err": max_err(got.depth, ref.depth),
                "weights_max_err": max_err(got.weights_total, ref.weights_total)}
    # 2. full size: 128 px, 96 + 96
    kw = dict(depth_samples=setup.samples[0], importance_samples=setup.samples[1])
    ref = G.render(planes, c, **kw)
    for backend in ("triton", "compiled"):
        got = G.render(planes, c, backend=backend, **kw)
        out[f"full/{backend}/fp32"] = {"features_max_err": max_err(got.feature_image, ref.feature_image),
                                       "depth_max_err": max_err(got.depth, ref.depth),
                                       "psnr_db": speed.psnr(got.feature_image, ref.feature_image)}
    for key, value in out.items():
        ok = value["features_max_err"] < (2e-2 if "bf16" in key else 1e-4)
        value["ok"] = ok
        print(f"check {key:45s} {'ok ' if ok else 'BAD'} {value}", flush=True)
    return out


@torch.inference_mode()
def sweep(setup: Setup) -> dict:
    """Rays per program x warps of both kernels, one full-size 96/96 render at batch 8."""
    from vidtriplane.kernels import triton_render as tr

    G, planes, c = generator_and_planes(setup, 8)
    kw = dict(depth_samples=setup.samples[0], importance_samples=setup.samples[1])
    results = {}
    for block, warps in setup.sweep:
        tr.BLOCK_RAYS, tr.NUM_WARPS = block, warps
        try:
            seconds, _ = speed.time_call(lambda: G.render(planes, c, backend="triton", **kw).feature_image,
                                         setup.device, warmup=1, repeats=3)
            results[f"{block}x{warps}"] = 1000 * min(seconds) / 8
        except Exception as exc:  # a launch configuration that does not compile is just not a candidate
            results[f"{block}x{warps}"] = f"failed: {type(exc).__name__}"
        print(f"sweep block {block} warps {warps}: {results[f'{block}x{warps}']}", flush=True)
    timed = {k: v for k, v in results.items() if isinstance(v, float)}
    best = min(timed, key=timed.get)
    tr.BLOCK_RAYS, tr.NUM_WARPS = (int(v) for v in best.split("x"))
    return {"ms_per_frame_render_only": results, "best": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--budget-s", type=float, default=450)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tf32", action="store_true", help="TF32 for the float32 rows (default: strict float32)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--parts", default="checks,sweep,table,compile-default,compile-reduce-overhead,compiled-renderer",
                    help="comma-separated parts to run (in their fixed order)")
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU (TRITON_INTERPRET=1): the control flow")
    args = ap.parse_args()
    budget = Budget(args.budget_s)
    setup = Setup.smoke() if args.smoke else Setup(torch.device("cuda"))
    device = setup.device
    out_dir = Path(os.environ.get("OUT", "."))
    path = Path(args.json) if args.json else out_dir / "gpu_fast.json"
    doc: dict = {"device": speed.device_name(device), "torch": torch.__version__, "results": [], "skipped": [],
                 "errors": {}}

    def save() -> None:
        doc["skipped"] = budget.skipped
        path.write_text(json.dumps(doc, indent=1) + "\n")

    wanted = set(args.parts.split(","))

    def part(name: str, needs: float, fn):
        if name not in wanted or not budget.allows(name, needs):
            return None
        start = time.perf_counter()
        try:
            return fn()
        except Exception:  # record and go on: the other parts still tell us something
            doc["errors"][name] = traceback.format_exc()[-3000:]
            print(doc["errors"][name], flush=True)
            return None
        finally:
            doc.setdefault("part_seconds", {})[name] = time.perf_counter() - start
            save()

    doc["checks"] = part("checks", 30, lambda: checks(setup))
    doc["sweep"] = part("sweep", 60, lambda: sweep(setup))
    doc["runtime"] = runtime.configure(device, tf32=args.tf32)
    torch.manual_seed(0)
    net = TriPlaneNet(setup.net).eval().requires_grad_(False).to(device)
    size = setup.net.psp.input_size
    batches = [int(b) for b in args.batches.split(",")]
    references: dict = {}

    def rows(configs, batch_list, label=""):
        def run():
            for batch in batch_list:
                for backend, precision in configs:
                    if not budget.allows(f"{label}{backend}/{precision}/b{batch}", 10 + batch):
                        continue
                    try:
                        row = speed.measure_one(net, backend=backend, precision=precision, batch=batch,
                                                samples=setup.samples, repeats=args.repeats, size=size,
                                                references=references)
                    except (torch.OutOfMemoryError, BackendUnavailable) as exc:
                        torch.cuda.empty_cache()
                        doc["errors"][f"{label}{backend}/{precision}/b{batch}"] = f"{type(exc).__name__}: {exc}"
                        continue
                    entry = {**row.__dict__, "network_compile": label.rstrip(":") or "none"}
                    if label:
                        entry["backend"] = f"{backend}+net-{label.rstrip(':')}"
                    doc["results"].append(entry)
                    print(f"{label}{backend}/{precision} b{batch}: {row.fps:.2f} frames/s, {row.ms_per_frame:.2f} ms, "
                          f"{(row.peak_mem_bytes or 0) / 2**30:.2f} GiB, PSNR {row.psnr_db_vs_eager_fp32}", flush=True)
                    save()
        return run

    precisions = ("fp32", "bf16", "fp16")
    part("table", 60, rows([(b, p) for b in ("eager", "triton") for p in precisions], batches))
    ends = sorted({batches[0], batches[-1]})
    for mode in ("default", "reduce-overhead"):
        def compiled_net(mode=mode):
            compile_network(net, mode=mode)
            try:
                rows([("triton", "bf16")], ends, f"{mode}:")()
            finally:
                uncompile_network(net)
                torch._dynamo.reset()
        part(f"compile-{mode}", 150, compiled_net)
    part("compiled-renderer", 90, rows([("compiled", "fp32"), ("compiled", "bf16")], ends))
    table = [speed.SpeedRow(**{k: v for k, v in r.items() if k != "network_compile"}) for r in doc["results"]]
    print("\n" + speed.markdown_table(table))
    doc["total_seconds"] = time.perf_counter() - budget.start
    save()
    print(f"wrote {path}; skipped: {budget.skipped or 'nothing'}; errors: {list(doc['errors']) or 'none'}")


if __name__ == "__main__":
    main()
