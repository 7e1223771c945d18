"""``vidtriplane preprocess``: aligned 512 crops + ``dataset.json`` camera labels from a video or images."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Optional

import click

from vidtriplane.commands.common import setup_logging
from vidtriplane.commands.options import config_options, device_option, engine_options, verbosity_options
from vidtriplane.runners.jobs import PlanError

log = logging.getLogger("vidtriplane")

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
FOLDER_REPORT_NAME = "vidtriplane-preprocess.report.json"


def resolve_config(configs: tuple[str, ...], overrides: tuple[str, ...], matting: Optional[bool], official: bool,
                   device: Optional[str] = None):
    """Presets -> flags -> ``--set`` overrides, as a PreprocessConfig."""
    from vidtriplane.config import resolve

    flags: dict[str, Any] = {}
    if device is not None:
        flags["landmarks"] = {"device": device}
    if matting is not None:
        flags["matting"] = {"enabled": matting}
    if official:
        flags["align"] = {"official_rounding": True}
        flags["smooth"] = {"mode": "off"}
    return resolve("preprocess", configs=configs, flags=flags, overrides=overrides)


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise PlanError(f"{folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def read_image(path: Path):
    """An image file as RGB uint8 (grey and 16-bit images are converted; EXIF orientation applied)."""
    import cv2

    from vidtriplane.io.reader import InputError

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read {path} as an image (unreadable or not an image); remove it from the folder")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _image_batches(files: list[Path]) -> Iterator:
    from fractions import Fraction

    import numpy as np

    from vidtriplane.types import FrameBatch, VideoMeta

    for i, path in enumerate(files):
        image = read_image(path)
        h, w = image.shape[:2]
        meta = VideoMeta(width=w, height=h, fps=Fraction(0), time_base=Fraction(1), source=str(path))
        idx = np.array([i], dtype=np.int64)
        yield FrameBatch(meta=meta, index=idx, pts=idx.copy(), frames=image[None])


@click.command(
    "preprocess",
    epilog="""\b
Examples:
  vidtriplane preprocess talk.mp4 -o data/talk
  vidtriplane preprocess photos/ -o data/photos --official --mirror
  ffmpeg -i in.mov -f nut - | vidtriplane preprocess - -o data/clip
  vidtriplane preprocess talk.mp4 -o out --matting --set matting.background=[0,0,0]
  vidtriplane preprocess talks/ -r -o datasets/             # one dataset folder per video
  vidtriplane preprocess talks/ -r -o datasets/ --engine ray --workers 8
  vidtriplane preprocess talk.mp4 -o out --set landmarks.backend=mtcnn --device cuda
""",
)
@click.argument("input", type=str)
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Output folder (written under a hidden temporary name and renamed when complete).")
@config_options("preprocess")
@click.option("--matting/--no-matting", default=None,
              help="Replace the crop background (rembg).  [default: from config: off]")
@click.option("--official", is_flag=True,
              help="Official integer crop, no smoothing (dataset parity with the EG3D code).")
@click.option("--mirror", is_flag=True, help="Also write mirrored crops NAME_mirror.png with mirrored labels.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True, help="Frames per batch.")
@device_option
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Pose cache folder.  [default: $VIDTRIPLANE_CACHE/poses, else poses/ in $VIDTRIPLANE_HOME "
                   "(~/.cache/vidtriplane)]")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the pose cache.")
@click.option("--input-format", type=str, help="Container format of stdin (nut, y4m, matroska, mpegts, mp4).")
@click.option("--overwrite", is_flag=True, help="Replace an output folder that already holds files (folders of "
                                                  "videos: redo finished datasets).")
@click.option("-r", "--recursive", is_flag=True, help="Folder of videos: include subfolders.")
@engine_options()
@verbosity_options
def command(input: str, output: str, configs, overrides, dry_run, matting, official, mirror, batch_size, device,
            cache_dir, no_cache, input_format, overwrite, recursive, engine, quiet, verbose) -> None:
    """Write aligned 512x512 face crops (PNG) and dataset.json camera labels for INPUT.

    INPUT is a video file, a folder of images, a folder of videos (one dataset folder per video:
    OUTPUT/<relative path without suffix>/, finished ones are skipped), or - for a video on stdin. Every
    input frame gives one crop: frames without a face hold the last good crop and pose, then fall back
    (counted, listed in preprocess.json). dataset.json has the official format
    {"labels": [[name, [25 floats]], ...]}. --device (landmarks.device) places the MTCNN detector
    (landmarks.backend=mtcnn) and, when matting.device is auto, the matting network.
    """
    from vidtriplane.config import dump
    from vidtriplane.runners.jobs import Job, check_writable
    from vidtriplane.runners.preprocess import PreprocessTask

    setup_logging(quiet, verbose)
    cfg = resolve_config(configs, overrides, matting, official, device)
    if dry_run:
        click.echo(dump(cfg), nl=False)
        return
    task = PreprocessTask(cfg, mirror=mirror, batch_size=batch_size, cache_dir=cache_dir, use_cache=not no_cache,
                          input_format=input_format)
    if input != "-" and Path(input).is_dir() and _holds_videos(Path(input), recursive):
        _run_folder(input, output, task, engine, recursive=recursive, overwrite=overwrite)
        return
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PlanError(f"output folder {out} already holds files; pass --overwrite to replace it")
    if input != "-" and not Path(input).exists():
        raise PlanError(f"input {input} does not exist (give a video, an image folder, or - for stdin)")
    job = Job(input, output, (output,))
    engine.check([job])
    check_writable(out)
    engine.run([job], task, folder=False, overwrite=True)
    log.info("wrote %s", out)


def _holds_videos(folder: Path, recursive: bool) -> bool:
    """A folder of videos (True) or of images (False; also when it holds neither: run() says so)."""
    from vidtriplane.runners.jobs import VIDEO_EXTENSIONS

    top = [p for p in folder.iterdir() if p.is_file()]
    images = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in top)
    files = folder.glob("**/*") if recursive else top
    videos = any(p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() for p in files)
    if images and videos:
        raise PlanError(f"{folder} holds both images and videos; put the images (one dataset) and the videos "
                        "(one dataset each) in separate folders")
    return videos


def _run_folder(src: str, dst: str, task, engine, *, recursive: bool, overwrite: bool) -> None:
    """One dataset folder per video, through the engine's runner; failures are reported, the rest finish."""
    import json
    import sys

    from vidtriplane.runners.jobs import check_outputs_writable, plan
    from vidtriplane.runners.local import log_summary
    from vidtriplane.weights.store import atomic_write_text

    jobs, _ = plan(src, dst, recursive=recursive, suffix="", outputs_of=task.outputs)
    engine.check(jobs)
    check_outputs_writable(jobs, dst)
    summary = engine.run(jobs, task, folder=True, overwrite=overwrite)
    log_summary(summary)
    if not engine.local:
        from vidtriplane.runners.ray import log_workers

        log_workers(summary)
    if not summary.ok:
        path = Path(dst) / FOLDER_REPORT_NAME
        atomic_write_text(path, json.dumps(summary.to_dict(), indent=1, default=str) + "\n")
        log.info("folder report: %s", path)
        sys.exit(1)


def run(source: str, out_dir: Path, cfg, *, mirror: bool = False, batch_size: int = 16,
        cache_dir: Optional[str] = None, use_cache: bool = True, input_format: Optional[str] = None,
        models=None, final_dir: Optional[Path] = None) -> dict:
    """Preprocess ``source`` into ``out_dir``; returns the report written to preprocess.json.

    ``models``: a ``runners.preprocess.PreprocessModels`` kept across inputs (None: loaded here).
    ``final_dir``: the name ``out_dir`` will be renamed to when complete (what the log lines name).
    """
    import cv2
    import numpy as np
    import torch

    from vidtriplane import cache as pose_cache
    from vidtriplane.config import dump
    from vidtriplane.geometry.camera import flip_yaw
    from vidtriplane.config.media import ReaderConfig
    from vidtriplane.io.reader import open_video
    from vidtriplane.pipeline.geometry import video_geometry
    from vidtriplane.stages import preprocess as pp, smooth

    path = Path(source)
    folder = source != "-" and path.is_dir()
    if source != "-" and not path.exists():
        raise PlanError(f"input {source} does not exist (give a video, an image folder, or - for stdin)")
    files = _image_files(path) if folder else []

    if folder:  # unrelated photos: each on its own, nothing to smooth over
        cfg = replace(cfg, smooth=replace(cfg.smooth, mode="off"))

    # 1. pose cache lookup (files and folders; stdin cannot be hashed before it is read)
    store = pose_cache.PoseCache(cache_dir) if use_cache and source != "-" else None
    settings = cfg.geometry_settings()
    input_hash = None
    cached = None
    if store is not None:
        input_hash = pose_cache.hash_files(files) if folder else pose_cache.hash_file(path)
        cached = store.load(input_hash, settings)
        if cached is not None:
            log.info("pose cache hit: reusing landmarks, crops and labels (%s)", store.directory)
    offline = not folder and cached is None and smooth.resolve_mode(cfg.smooth, source) == "offline"
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.matting.enabled:
        (out_dir / "alpha").mkdir(exist_ok=True)
    labels: list[list] = []
    missing: list[str] = []

    def write(batch, names: list[str]) -> None:
        for j, name in enumerate(names):
            cv2.imwrite(str(out_dir / f"{name}.png"), batch.crops[j][..., ::-1])
            labels.append([f"{name}.png", [float(v) for v in batch.labels[j]]])
            if batch.alpha is not None:
                cv2.imwrite(str(out_dir / "alpha" / f"{name}.png"), np.rint(batch.alpha[j] * 255).astype(np.uint8))
            if not batch.face_found[j]:
                missing.append(f"{name}.png")
            if mirror:
                cv2.imwrite(str(out_dir / f"{name}_mirror.png"), batch.crops[j][:, ::-1, ::-1])
                flipped = flip_yaw(torch.from_numpy(batch.labels[j].astype(np.float64)))
                labels.append([f"{name}_mirror.png", [float(v) for v in flipped]])

    # 2. frames -> crops + labels (the input is opened before the models load, so bad input fails fast)
    reader = None
    try:
        if not folder:
            reader = open_video(source, ReaderConfig(format=input_format, audio=False))
        need = cached is None  # the face model only when the geometry is not cached
        loaded = models.get(geometry=need) if models is not None else pp.load_models(cfg, geometry=need)
        geometry_report = None
        if offline:  # the geometry pass: the whole video's crops and poses, smoothed, before any crop is cut
            cached, geometry_report = video_geometry(source, cfg, loaded, ReaderConfig(format=input_format))
            log.info("geometry pass: %d frames in %.1f s", geometry_report["frames"], geometry_report["seconds"])
        runner = pp.Preprocessor(loaded, cfg, cached, report=geometry_report)
        if folder:
            for batch in _image_batches(files):
                runner.state = replace(pp.PreprocessState(), counts=runner.state.counts, steps=runner.state.steps)
                write(runner(batch), [files[int(batch.index[0])].stem])
        else:
            for batch in reader.batches(batch_size):
                write(runner(batch), [f"{int(i):06d}" for i in batch.index])
    finally:
        if reader is not None:
            reader.close()

    # 3. dataset.json, the report, the resolved config, the pose cache entry
    (out_dir / "dataset.json").write_text(json.dumps({"labels": labels}))
    report = {"input": source, "cache_hit": cached is not None and geometry_report is None, **runner.report,
              "no_face": missing}
    if folder:
        report.pop("steadiness", None)  # photos are not a track
    (out_dir / "preprocess.json").write_text(json.dumps(report, indent=1))
    (out_dir / "preprocess.yaml").write_text(dump(cfg))
    geometry = cached if geometry_report is not None else runner.new_geometry
    if store is not None and geometry is not None:
        store.save(input_hash, settings, geometry, source=source)
    counts = runner.counts
    shown = final_dir if final_dir is not None else out_dir
    log.info("%d frames: %d with a face, %d held, %d fallback -> %s", counts["frames"], counts["faces"],
             counts["held"], counts["fallback"], shown)
    if counts["fallback"] or counts["held"]:
        log.warning("%d frame(s) had no face (held or fallback crops); see %s", len(missing),
                    shown / "preprocess.json")
    return report
