"""Ray runner scaling: frames/s with 1 and 2 workers against a local run, and where the overhead goes.

    python benchmarks/ray_scaling.py                               # tiny model, aligned pipeline
    python benchmarks/ray_scaling.py --workers 1,2,4 --clips 16 --frames 24 --long-frames 400
    python benchmarks/ray_scaling.py --pipeline default             # face preprocessing: a geometry pass

Two workloads, each rendered locally (the reference) and with the Ray runner for every worker count:
a folder of ``--clips`` clips of ``--frames`` frames (whole videos as units), and one clip of
``--long-frames`` frames cut into segments of ``--segment-frames`` (plan unit, segments, stitch). Every
Ray output is checked to decode to the local run's frames. Columns:

* ``wall_s`` / ``fps``: the whole run, from starting Ray (or the workers) to the last output;
* ``steady_fps``: frames / (wall - start-up), what more frames would approach;
* ``startup_s``: Ray started here (first run of a worker count) and the workers spawned, until the first
  one had loaded its models; ``load_s``: model load time per worker (mean);
* ``unit_s``: mean time of a unit on its worker; ``overhead_s``: per unit, the worker-side time beyond the
  local run's time for the same frames (opening files, the lossless segment files, Ray's call);
* ``plan_s``: the planning unit of the long clip (frame index, and with ``--pipeline default`` the
  sequential geometry pass; each run gets a fresh pose cache, so the pass is never skipped);
  ``stitch_s``: decoding the segments and encoding the one output.

Uses generated weights on the CPU with one torch thread per worker (``runtime.torch_threads=1``), so on a
machine with C free cores up to C workers can run side by side.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.runners.media import FAST, assert_same_video, face_clip, pattern_clip  # noqa: E402
from vidtriplane.config import resolve  # noqa: E402
from vidtriplane.runners.engine import RayOptions  # noqa: E402
from vidtriplane.runners.jobs import Job, plan  # noqa: E402
from vidtriplane.runners.local import run_local  # noqa: E402
from vidtriplane.runners.ray import run_ray  # noqa: E402
from vidtriplane.runners.render import RenderTask  # noqa: E402


def local_row(name: str, jobs: list[Job], task: RenderTask, folder: bool) -> dict:
    start = time.perf_counter()
    summary = run_local(jobs, task, folder=folder, overwrite=True)
    wall = time.perf_counter() - start
    frames = sum(r.report["frames"] for r in summary.results)
    seconds = [r.seconds for r in summary.results]
    return {"run": "local", "workload": name, "frames": frames, "wall_s": wall, "fps": frames / wall,
            "steady_fps": frames / sum(seconds), "unit_s": statistics.mean(seconds),
            "per_frame_s": sum(seconds) / frames}


def ray_row(name: str, jobs: list[Job], task: RenderTask, folder: bool, options: RayOptions, extra_start: float,
            local: dict) -> dict:
    start = time.perf_counter()
    summary = run_ray(jobs, task, folder=folder, overwrite=True, options=options)
    wall = time.perf_counter() - start + extra_start
    engine = summary.to_dict()["engine"]
    units = [u for u in engine["units"] if u["status"] == "done"]
    renders = [u for u in units if u["kind"] != "plan"]
    frames = engine["frames"]
    startup = engine["startup_seconds"] + extra_start
    overhead = statistics.mean(u["seconds"] - u["frames"] * local["per_frame_s"] for u in renders)
    report = summary.results[0].report if not folder else {}
    return {"run": f"ray x{options.workers}", "workload": name, "frames": frames, "wall_s": wall,
            "fps": frames / wall, "steady_fps": frames / (wall - startup), "startup_s": startup,
            "load_s": statistics.mean(w["load_seconds"] for w in engine["workers"]),
            "units": len(renders), "unit_s": statistics.mean(u["seconds"] for u in renders), "overhead_s": overhead,
            "plan_s": sum(u["seconds"] for u in units if u["kind"] == "plan") or None,
            "stitch_s": report.get("stitch_seconds")}


def table(rows: list[dict]) -> str:
    cols = ["run", "workload", "frames", "wall_s", "fps", "steady_fps", "startup_s", "load_s", "units", "unit_s",
            "overhead_s", "plan_s", "stitch_s"]

    def cell(v) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = [[c for c in cols]] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="Comma-separated worker counts.")
    parser.add_argument("--clips", type=int, default=8, help="Clips in the folder workload.")
    parser.add_argument("--frames", type=int, default=24, help="Frames per folder clip.")
    parser.add_argument("--long-frames", type=int, default=192, help="Frames of the long clip.")
    parser.add_argument("--segment-frames", type=int, default=48, help="Segment length of the long clip.")
    parser.add_argument("--pipeline", default="aligned", choices=["aligned", "default"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import ray

    cfg = resolve("render", pipeline=args.pipeline, configs=["generated-tiny"], overrides=FAST)
    task = RenderTask(cfg, progress=False, save_config=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "clips").mkdir()
        for i in range(args.clips):
            pattern_clip(root / "clips" / f"c{i:02d}.mp4", args.frames, gop=12)
        long = root / "long.mp4"
        if args.pipeline == "default":
            face_clip(long, args.long_frames)
        else:
            pattern_clip(long, args.long_frames, gop=25)

        def workloads(out: str) -> list[tuple[str, list[Job], bool]]:
            folder_jobs, _ = plan(str(root / "clips"), str(root / out / "clips"), recursive=False, suffix=".mp4",
                                  outputs_of=task.outputs)
            target = str(root / out / "long.mp4")
            return [(f"folder {args.clips}x{args.frames}", folder_jobs, True),
                    (f"1 clip, {args.long_frames} in segments", [Job(str(long), target, (target,))], False)]

        local = {}
        os.environ["VIDTRIPLANE_CACHE"] = str(root / "cache-local")  # a fresh pose cache per run (workers too)
        for name, jobs, folder in workloads("local"):
            local[name] = local_row(name, jobs, task, folder)
            rows.append(local[name])
        for n in [int(v) for v in args.workers.split(",")]:
            start = time.perf_counter()
            ray.init(num_cpus=max(n, 2), include_dashboard=False, logging_level=logging.ERROR)
            init = time.perf_counter() - start
            os.environ["VIDTRIPLANE_CACHE"] = str(root / f"cache-ray{n}")  # so the plan runs the geometry pass
            for k, (name, jobs, folder) in enumerate(workloads(f"ray{n}")):
                options = RayOptions(workers=n, segment_frames=None if folder else args.segment_frames,
                                     progress=False, log_level=logging.ERROR)
                rows.append(ray_row(name, jobs, task, folder, options, init if k == 0 else 0.0, local[name]))
                for job, ref in zip(jobs, workloads("local")[k][1]):
                    assert_same_video(Path(job.target), Path(ref.target))
            ray.shutdown()
    print(table(rows))


if __name__ == "__main__":
    main()
