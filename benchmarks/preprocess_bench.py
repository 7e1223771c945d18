"""Preprocessing: per-stage time per frame at 720p / 1080p, pose error on the official fixture, jitter.

    python benchmarks/preprocess_bench.py                  # all three parts
    python benchmarks/preprocess_bench.py --frames 60 --no-matting

1. Speed: a synthetic clip of scikit-image's astronaut (a real, public-domain face) drifting, zooming and
   turning in plane over a 1280x720 and a 1920x1080 canvas (face about 1/3 of the frame height). Times
   per frame of: whole-frame detection (what a key frame / lost track costs), tracked landmarks,
   crop squares (POS), pose (PnP), smoothing, the crop warp, and u2netp matting of the 512 crop.
2. The pose of ``../shared/fixtures/eg3d_example/example.png`` against its official label (angle between
   the rotations, yaw and pitch of the camera centre).
3. Jitter on a moving-face clip with Gaussian noise added to the landmarks: mean frame-to-frame change of
   the crop centre (frame pixels) and of the yaw (degrees); ``centre_jitter_px`` = mean distance between
   a frame's centre step and the noise-free step (the motion that is not the face's); ``centre_accel_px``
   = mean norm of the second difference (shake; smooth motion has almost none); and the RMS error
   against the noise-free trajectory (noise left + lag), without smoothing, with the causal One-Euro
   filter and with a 2-frame look-ahead. The clip only moves in the image plane, so the true yaw is
   constant and every yaw step is jitter.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vidtriplane.stages import align, landmarks, pose, smooth  # noqa: E402
from vidtriplane.stages import preprocess as pp  # noqa: E402


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def clip(size: tuple[int, int], n: int, speed: float = 1.0) -> np.ndarray:
    """Astronaut on a ``size`` canvas: drift, zoom and in-plane turn (speed 1 = about 2 px/frame at 720p)."""
    img = astronaut()
    w, h = size
    base = h / 512 * 0.9
    out = []
    for i in range(n):
        a = speed * i / 60.0
        m = cv2.getRotationMatrix2D((255.5, 255.5), 6 * np.sin(2 * np.pi * a), base * (1 + 0.1 * np.sin(np.pi * a)))
        m[:, 2] += np.array([w / 2 + 0.12 * w * np.sin(2 * np.pi * a), h / 2 + 0.04 * h * np.cos(2 * np.pi * a)]) - 255.5
        out.append(cv2.warpAffine(img, m, size, flags=cv2.INTER_LINEAR))
    return np.stack(out)


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def speed(frames_n: int, matting_on: bool) -> dict:
    cfg = pp.PreprocessConfig()
    backend = landmarks.load_backend(cfg.landmarks)
    session = None
    if matting_on:
        from vidtriplane.stages import matting

        session = matting.load_session(matting.MattingConfig(enabled=True))
    results = {}
    for name, size in (("720p", (1280, 720)), ("1080p", (1920, 1080))):
        frames = clip(size, frames_n)
        t = {}
        # whole-frame detection (key frames, lost tracks)
        gray = [landmarks.to_gray(f) for f in frames[:5]]
        _, dt = timed(lambda: [landmarks._detect_full(g, backend, cfg.landmarks) for g in gray])
        t["detect_full_frame"] = dt / len(gray)
        # tracked landmarks over the clip (includes the first whole-frame detection)
        state = landmarks.LandmarkState()
        lms = np.zeros((frames_n, 68, 2), np.float32)
        start = time.perf_counter()
        for i, f in enumerate(frames):
            lms[i], _, state = landmarks.track_frame(f, state, backend, cfg.landmarks)
        t["landmarks_tracked"] = (time.perf_counter() - start) / frames_n
        found = np.isfinite(lms).all(axis=(1, 2))
        params, dt = timed(align.crop_params, lms, size[1], cfg.align)
        t["align_pos"] = dt / frames_n
        sig, dt = timed(smooth.one_euro, smooth.crop_to_signal(params), found, smooth.SmoothState(), 25.0, cfg.smooth)
        t["smooth_crop"] = dt / frames_n
        mats = align.crop_matrices(smooth.signal_to_crop(sig[0]), cfg.align)
        (rot, trans), dt = timed(pose.estimate, lms, mats, 512, cfg.pose)
        t["pose_pnp"] = dt / frames_n
        _, dt = timed(pose.labels, rot, trans, cfg.pose)
        t["pose_label"] = dt / frames_n
        crops, dt = timed(align.warp_crops, frames, mats, cfg.align)
        t["warp_crop"] = dt / frames_n
        if session is not None:
            from vidtriplane.stages import matting

            k = min(frames_n, 8)
            _, dt = timed(matting.matte, crops[:k], session, matting.MattingConfig(enabled=True))
            t["matting_u2netp"] = dt / k
        t["total_without_full_detection"] = sum(v for k, v in t.items() if k != "detect_full_frame")
        t["faces_found"] = int(found.sum())
        results[name] = t
    return results


def fixture_error() -> dict:
    import torch
    from PIL import Image

    from vidtriplane.geometry import camera

    root = REPO.parent / "shared" / "fixtures" / "eg3d_example"
    if not root.exists():
        return {"skipped": f"{root} is absent"}
    img = np.asarray(Image.open(root / "example.png").convert("RGB"))
    ref = torch.tensor(json.loads((root / "dataset.json").read_text())["labels"][0][1], dtype=torch.float64)
    backend = landmarks.load_backend()
    lm, _, _ = landmarks.track_frame(img, landmarks.LandmarkState(), backend, landmarks.LandmarkConfig())
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
            "yaw_deg": float(np.degrees(float(yaw))),
            "official_yaw_deg": float(np.degrees(float(ryaw))),
            "pitch_deg": float(np.degrees(float(pitch))),
            "official_pitch_deg": float(np.degrees(float(rpitch))),
        }
    params = align.crop_params(lm[None], img.shape[0])[0]
    out["realign_official_crop"] = {"cx": float(params[0]), "cy": float(params[1]), "side": float(params[2]),
                                    "identity": [255.5, 255.5, 512.0]}
    return out


def jitter(n: int, noise_px: float, seed: int = 0) -> dict:
    """Crop-centre and yaw jitter with landmark noise, with and without smoothing."""
    size = (1280, 720)
    frames = clip(size, n, speed=0.5)
    backend = landmarks.load_backend()
    state = landmarks.LandmarkState()
    clean = np.zeros((n, 68, 2))
    for i, f in enumerate(frames):
        clean[i], _, state = landmarks.track_frame(f, state, backend, landmarks.LandmarkConfig())
    found = np.isfinite(clean).all(axis=(1, 2))
    rng = np.random.default_rng(seed)
    noisy = clean + rng.normal(0, noise_px, clean.shape)

    def run(lms: np.ndarray, cfg: smooth.SmoothConfig) -> tuple[np.ndarray, np.ndarray]:
        params = align.crop_params(lms, size[1])
        sig, _ = smooth.one_euro(smooth.crop_to_signal(params), found, smooth.SmoothState(), 25.0, cfg)
        params = smooth.signal_to_crop(sig)
        mats = align.crop_matrices(params)
        rot, trans = pose.estimate(lms, mats, 512)
        psig, _ = smooth.one_euro(pp._pose_signal(rot, trans), found, smooth.SmoothState(), 25.0, cfg)
        return params, np.degrees(psig[:, 1])  # rotation vector y = yaw of the head

    ref_params, ref_yaw = run(clean, smooth.SmoothConfig(enabled=False))
    out = {"frames": n, "faces": int(found.sum()), "landmark_noise_px": noise_px}
    variants = {
        "clean_unsmoothed": (clean, smooth.SmoothConfig(enabled=False)),
        "noisy_unsmoothed": (noisy, smooth.SmoothConfig(enabled=False)),
        "noisy_one_euro": (noisy, smooth.SmoothConfig()),
        "noisy_one_euro_lookahead2": (noisy, smooth.SmoothConfig(lookahead=2)),
    }
    ref_step = np.diff(ref_params[:, :2], axis=0)
    for name, (lms, cfg) in variants.items():
        params, yaw = run(lms, cfg)
        step = np.diff(params[:, :2], axis=0)
        out[name] = {
            "centre_step_px": float(np.linalg.norm(step, axis=1).mean()),
            "centre_jitter_px": float(np.linalg.norm(step - ref_step, axis=1).mean()),
            "centre_accel_px": float(np.linalg.norm(np.diff(step, axis=0), axis=1).mean()),
            "yaw_step_deg": float(np.abs(np.diff(yaw)).mean()),
            "centre_rmse_vs_clean_px": float(np.sqrt(((params[:, :2] - ref_params[:, :2]) ** 2).sum(1).mean())),
            "yaw_rmse_vs_clean_deg": float(np.sqrt(((yaw - ref_yaw) ** 2).mean())),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=30, help="frames per speed clip")
    ap.add_argument("--jitter-frames", type=int, default=100)
    ap.add_argument("--noise", type=float, default=1.5, help="landmark noise (px at 720p)")
    ap.add_argument("--no-matting", action="store_true")
    ap.add_argument("--parts", default="speed,fixture,jitter")
    args = ap.parse_args()
    cv2.setNumThreads(cv2.getNumberOfCPUs())
    parts = args.parts.split(",")
    report = {}
    if "fixture" in parts:
        report["fixture"] = fixture_error()
    if "jitter" in parts:
        report["jitter"] = jitter(args.jitter_frames, args.noise)
    if "speed" in parts:
        report["seconds_per_frame"] = speed(args.frames, not args.no_matting)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
