"""MTCNN speed: frames/s of full detection and of tracked frames at 720p / 1080p, batch 1 and 8.

    python benchmarks/mtcnn_bench.py                      # CPU (or CUDA when available), min face 20 and 40
    python benchmarks/mtcnn_bench.py --device cpu --frames 24 --min-face 20

The clip is scikit-image's astronaut (a real, public-domain face) swaying, zooming and nodding in plane
with the face box about 0.3 of the frame height (``preprocess_bench.talking_head``). Columns:

* ``detect``: the full cascade (pyramid + P/R/O-net) on every frame, ``batch`` frames per call;
* ``tracked``: :func:`~vidtriplane.stages.mtcnn_track.track_batch` through the clip on a face already
  being tracked (two O-net passes per frame, no key frames), ``batch`` frames per call; ``full`` counts
  the full detections it fell back to (0 when tracking holds);
* each cell is the fastest of three passes (this machine is shared), with the CPU time of that pass;
* ``pose68``: dlib's 68-point predictor in the box placed from the five points (the default pose points
  of the mtcnn backend), ms per frame.

Weights: the cached ``mtcnn`` entry (``vidtriplane weights fetch mtcnn``) or ``--wheel`` the facenet-pytorch
wheel itself.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.preprocess_bench import talking_head  # noqa: E402
from vidtriplane.config.preprocess import LandmarkConfig, MtcnnConfig  # noqa: E402
from vidtriplane.stages import face_mtcnn, mtcnn_track  # noqa: E402
from vidtriplane.stages import landmarks as lmk  # noqa: E402

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def load_nets(wheel: str | None, device: str):
    if wheel:
        from vidtriplane.models.mtcnn import MTCNN
        from vidtriplane.models.state import load_strict
        from vidtriplane.weights.mtcnn_files import read_source

        nets = load_strict(MTCNN(), read_source(Path(wheel)).state_dict, what="MTCNN").eval()
    else:
        from vidtriplane.checkpoints import load_mtcnn
        from vidtriplane.weights import resolve

        nets = load_mtcnn(resolve("mtcnn"))
    return nets.to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def per_second(fn, batches: list[np.ndarray], device: str, reset=None, repeats: int = 3) -> tuple[float, float]:
    """(frames per second, CPU milliseconds per frame) of ``fn(batch)`` over ``batches``: the fastest of
    ``repeats`` passes, each after ``reset()``, after one warm-up call. The fastest pass is the one least
    disturbed by other processes; CPU time counts every thread (and OpenMP's spinning)."""
    fn(batches[0])
    frames = sum(len(b) for b in batches)
    best = (0.0, float("inf"))
    for _ in range(repeats):
        if reset is not None:
            reset()
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        for b in batches:
            fn(b)
        sync(device)
        wall = time.perf_counter() - start
        if frames / wall > best[0]:
            best = (frames / wall, 1000 * (time.process_time() - cpu) / frames)
    return best


def bench(nets, frames: np.ndarray, batch: int, min_face: float, device: str) -> dict:
    batches = [frames[s:s + batch] for s in range(1, len(frames) - batch + 1, batch)]
    detect = per_second(lambda b: face_mtcnn.detect(nets, b, min_face=min_face), batches, device)
    cfg = LandmarkConfig(backend="mtcnn", mtcnn=MtcnnConfig(min_face=min_face))
    _, _, _, primed = mtcnn_track.track_batch(frames[:1], lmk.LandmarkState(), nets, cfg)
    assert primed.tracking, "no face in the first frame"
    state = {"now": primed, "detections": 0}
    full = face_mtcnn.detect

    def counting(*args, **kwargs):  # tracking should not fall back to full detection here
        state["detections"] += 1
        return full(*args, **kwargs)

    def track(b: np.ndarray) -> None:
        _, _, _, state["now"] = mtcnn_track.track_batch(b, state["now"], nets, cfg)

    def reset() -> None:
        state.update(now=primed, detections=0)

    face_mtcnn.detect = counting
    try:
        tracked = per_second(track, batches, device, reset)
    finally:
        face_mtcnn.detect = full
    return {"detect": detect, "tracked": tracked, "fallbacks": state["detections"]}


def pose68_ms(frames: np.ndarray, nets) -> float:
    try:
        dlib_backend = lmk.load_backend()
    except RuntimeError:
        return float("nan")
    found, _ = lmk.detect_batch(frames[:1], lmk.LandmarkState(), lmk.MtcnnBackend(nets),
                                LandmarkConfig(backend="mtcnn"))
    points = np.repeat(found.points, len(frames), axis=0)
    start = time.perf_counter()
    mtcnn_track.pose_landmarks(frames, points, dlib_backend)
    return 1000 * (time.perf_counter() - start) / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=9, help="clip length: frame 0 primes the tracker, "
                        "the next frames (a multiple of 8) are timed, three times")
    parser.add_argument("--min-face", type=float, nargs="+", default=[20.0, 40.0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--wheel", help="facenet-pytorch wheel to read the weights from (instead of the cache)")
    args = parser.parse_args()
    nets = load_nets(args.wheel, args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.frames} frames per cell, "
          f"load average {load:.1f} on {os.cpu_count()} CPUs")
    print("| size | min face | batch | detect frames/s | detect CPU ms/frame | tracked frames/s "
          "| tracked CPU ms/frame | full |")
    print("|---|---|---|---|---|---|---|---|")
    pose_ms = {}
    with torch.no_grad():
        for name, size in SIZES.items():
            frames, _ = talking_head(size, args.frames)
            pose_ms[name] = pose68_ms(frames[:8], nets)
            for min_face in args.min_face:
                for batch in args.batch:
                    r = bench(nets, frames, batch, min_face, args.device)
                    (dfps, dcpu), (tfps, tcpu) = r["detect"], r["tracked"]
                    print(f"| {name} | {min_face:g} | {batch} | {dfps:.2f} | {dcpu:.0f} | {tfps:.1f} | {tcpu:.0f} "
                          f"| {r['fallbacks']} |", flush=True)
    for name, ms in pose_ms.items():
        print(f"pose68 (dlib 68 points in the MTCNN box) at {name}: {ms:.1f} ms/frame")


if __name__ == "__main__":
    main()
