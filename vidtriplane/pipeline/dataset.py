"""One preprocess job: one input (a video file, a folder of images, or stdin) into one dataset folder.

Aligned 512 crops as PNG, ``dataset.json`` in the official format (``{"labels": [[name, [25 floats]],
...]}``, as ``eg3d:dataset_preprocessing/ffhq/preprocess_in_the_wild.py`` writes it), optional alphas and
mirrored pairs, ``preprocess.json`` (the report) and ``preprocess.yaml`` (the resolved config). The pose
cache is read first and written last. ``runners/preprocess.py`` runs this for every job (local or Ray);
``vidtriplane preprocess`` is the command in front of it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Optional

from vidtriplane.config.media import ReaderConfig
from vidtriplane.errors import PlanError

log = logging.getLogger("vidtriplane")

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


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


def run(source: str, out_dir: Path, cfg, *, mirror: bool = False, batch_size: int = 16,
        cache_dir: Optional[str] = None, use_cache: bool = True, reader_cfg: Optional[ReaderConfig] = None,
        models=None, final_dir: Optional[Path] = None) -> dict:
    """Preprocess ``source`` into ``out_dir``; returns the report written to preprocess.json.

    ``models``: a ``runners.preprocess.PreprocessModels`` kept across inputs (None: loaded here).
    ``reader_cfg``: how to open a video input (None: probe the container; no audio is needed).
    ``final_dir``: the name ``out_dir`` will be renamed to when complete (what the log lines name).
    """
    import cv2
    import numpy as np
    import torch

    from vidtriplane import cache as pose_cache
    from vidtriplane.config import dump
    from vidtriplane.geometry.camera import flip_yaw
    from vidtriplane.io.reader import open_video
    from vidtriplane.pipeline.geometry import video_geometry
    from vidtriplane.stages import preprocess as pp, smooth

    reader_cfg = reader_cfg if reader_cfg is not None else ReaderConfig(audio=False)
    path = Path(source)
    folder = source != "-" and path.is_dir()
    if source != "-" and not path.exists():
        raise PlanError(f"input {source} does not exist (give a video, an image folder, or - for stdin)")
    files = _image_files(path) if folder else []

    if folder:  # unrelated photos: each on its own, nothing to smooth over or carry an alpha to
        cfg = replace(cfg, smooth=replace(cfg.smooth, mode="off"), matting=replace(cfg.matting, every=1))

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
            reader = open_video(source, reader_cfg)
        need = cached is None  # the face model only when the geometry is not cached
        loaded = models.get(geometry=need) if models is not None else pp.load_models(cfg, geometry=need)
        geometry_report = None
        if offline:  # the geometry pass: the whole video's crops and poses, smoothed, before any crop is cut
            cached, geometry_report = video_geometry(source, cfg, loaded, reader_cfg)
            log.info("geometry pass: %d frames in %.1f s", geometry_report["frames"], geometry_report["seconds"])
        runner = pp.Preprocessor(loaded, cfg, cached, report=geometry_report)
        if folder:
            for batch in _image_batches(files):
                runner.state = replace(pp.PreprocessState(), counts=runner.state.counts, steps=runner.state.steps,
                                       matting=runner.state.matting)
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
