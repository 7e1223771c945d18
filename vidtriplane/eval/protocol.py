"""The paper's evaluation protocol (``tpn:scripts/inference.py`` + ``tpn:metrics/metrics.py``).

Model mode, on a folder of aligned crops + ``dataset.json``: every image is resized to the encoders' size
(256), inverted once (``TriPlaneNet.encode``, optional CTTR) and rendered at its own camera (same view,
pooled to 256) and at each novel-view yaw (absolute, pitch 0; the input's intrinsics kept). Same view is
scored with MSE on [-1, 1], LPIPS, MS-SSIM and ID against the input; each novel view with ID. The time per
image covers encoding + the same-view render (CUDA synchronised), like the paper's "time per image";
the official script times whole batches with every novel view and without synchronisation.

Folder mode compares two folders of images matched by file name, with the same metrics (no model).

ID is the raw cosine similarity of CurricularFace embeddings, as the official code reports it (the v1 paper
printed 0.5 * cos + 0.5). It needs the MTCNN face detector for the 112x112 alignment (:func:`id_aligner`).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vidtriplane.config.evaluate import EvalConfig
from vidtriplane.errors import UsageError, VidtriplaneError
from vidtriplane.eval.aligner import ID_ALIGNER_MISSING, id_aligner
from vidtriplane.eval.metrics import MetricAccumulator, MetricNets, MetricReport, id_similarity
from vidtriplane.geometry.camera import lookat_cam2world, with_pose
from vidtriplane.models.triplanenet import pool_to
from vidtriplane.train.data import IMAGE_EXTENSIONS, LabelledImages, TrainSamples, load_image

log = logging.getLogger(__name__)
SHOW = 5


class EvalInputError(UsageError):
    """Folders that cannot be evaluated as given; the message says what to fix."""


@dataclass
class Evaluation:
    """The result of one evaluation."""

    label: str
    """What was evaluated (weights file, or the prediction folder)."""
    report: MetricReport
    names: list[str]
    yaws: tuple[float, ...] = ()
    novel_id: dict[float, list[float]] = field(default_factory=dict)
    """yaw -> per-image ID of the novel view (NaN = no face); empty when ID cannot run."""
    seconds_per_image: list[float] = field(default_factory=list)
    """Per batch: seconds of encode + same-view render, divided by the batch size."""
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# Networks


def _registry_file(name: str) -> Path:
    from vidtriplane.weights import resolve

    return resolve(name)


def _one_line(exc: BaseException) -> str:
    """An error's whole message on one line (a download error lists each URL's failure and the import
    command on lines of their own, all of which the user needs)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def load_metric_nets(cfg: EvalConfig, device: torch.device) -> tuple[MetricNets, list[str]]:
    """LPIPS and the ID network from the registry, and the face aligner; absent ones are left out with a note."""
    from vidtriplane.checkpoints import load_face_embedder, load_lpips
    from vidtriplane.models.arcface import FaceEmbedderConfig

    notes: list[str] = []
    lpips = embedder = None
    try:
        lpips = load_lpips(_registry_file("alexnet"), _registry_file("lpips-alex-v0.1")).to(device)
    except Exception as exc:  # noqa: BLE001 - missing, undownloadable or bad files: the metric is left out
        log.warning("LPIPS is not computed: %s", _one_line(exc))
    align = id_aligner(device)
    if align is not None:
        candidates = [cfg.id_model] + (["ir-se50"] if cfg.id_fallback and cfg.id_model != "ir-se50" else [])
        for name in candidates:
            config = FaceEmbedderConfig.ir101() if name == "curricularface" else FaceEmbedderConfig.ir_se50()
            try:
                embedder = load_face_embedder(_registry_file(name), config).to(device)
            except Exception as exc:  # noqa: BLE001
                log.warning("ID network %s is not available: %s", name, _one_line(exc))
                continue
            if name != cfg.id_model:
                notes.append(f"ID uses {name} (fallback; the paper's metric uses {cfg.id_model})")
            break
    return MetricNets(lpips=lpips, id_embedder=embedder, align=align), notes


def accumulator(nets: MetricNets, size: int) -> MetricAccumulator:
    acc = MetricAccumulator(nets, size=size)
    if nets.align is None:
        acc.missing["id"] = ID_ALIGNER_MISSING
    return acc


# ---------------------------------------------------------------------------------------------------
# Model mode


def novel_camera(c: torch.Tensor, yaw: float) -> torch.Tensor:
    """The official novel view: look-at pose at absolute ``yaw`` (pitch 0), the input's intrinsics kept."""
    return with_pose(c, lookat_cam2world(yaw, 0.0, dtype=c.dtype, device=c.device))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate_model(net, images: LabelledImages, cfg: EvalConfig, nets: MetricNets, device: torch.device, *,
                   label: str, strips: Optional[Path] = None, progress: bool = True) -> Evaluation:
    """Invert every image of ``images`` and score same view and novel views (see the module docstring)."""
    from tqdm import tqdm

    from vidtriplane.train.logs import image_grid

    size = int(net.psp_encoder.config.input_size)
    samples = TrainSamples(images, synthetic=0, image_size=size, conf_size=1, z_dim=1, seed=0)
    keys = [(0, i) for i in range(len(images))]
    loader = torch.utils.data.DataLoader(samples, batch_size=cfg.batch_size, sampler=keys, num_workers=cfg.workers)
    kw = {"sampling": cfg.sampling, "depth_samples": cfg.depth_samples, "importance_samples": cfg.importance_samples}
    cttr = 1 if cfg.cttr else 0
    acc = accumulator(nets, cfg.size)
    score_id = nets.align is not None and nets.id_embedder is not None
    result = Evaluation(label=label, report=acc.report(), names=list(images.names), yaws=tuple(cfg.yaws))
    done = 0
    for batch in tqdm(loader, total=len(loader), unit="batch", disable=not progress):
        x, c = batch["image"].to(device), batch["label"].to(device)
        # 1. timed: encode once + the same view
        _sync(device)
        t0 = time.perf_counter()
        inv = net.encode(x, c, cttr_steps=cttr, **kw)
        same = pool_to(net.render(inv, c, **kw).image, (size, size))
        _sync(device)
        result.seconds_per_image.append((time.perf_counter() - t0) / len(x))
        # 2. same-view metrics
        acc.add(x, same)
        # 3. novel views from the same inversion
        novels = [pool_to(net.render(inv, novel_camera(c, yaw), **kw).image, (size, size)) for yaw in cfg.yaws]
        if score_id:
            for yaw, y in zip(cfg.yaws, novels):
                sims = id_similarity(nets.id_embedder, nets.align, x, y)
                result.novel_id.setdefault(yaw, []).extend(float(s) for s in sims)
        if strips is not None:
            from PIL import Image

            strips.mkdir(parents=True, exist_ok=True)
            for j in range(len(x)):
                row = image_grid([t[j:j + 1] for t in [x, same, *novels]])
                Image.fromarray(row).save(strips / f"{Path(images.names[done + j]).stem}.png")
        done += len(x)
    result.report = acc.report()
    return result


# ---------------------------------------------------------------------------------------------------
# Folder mode


def _images_by_stem(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise EvalInputError(f"{what} {folder} is not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in found:
                raise EvalInputError(f"{what} {folder} has two images named {p.stem!r} ({found[p.stem].name}, {p.name})")
            found[p.stem] = p
    if not found:
        raise EvalInputError(f"{what} {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def pair_folders(pred: Path, target: Path) -> list[tuple[str, Path, Path]]:
    """(name, prediction, target) for every image name (without extension) present in both folders; names in
    only one folder are an error that lists them."""
    a, b = _images_by_stem(Path(pred), "--pred"), _images_by_stem(Path(target), "--target")
    only_pred, only_target = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    problems = []
    for names, here, there in ((only_pred, "--pred", "--target"), (only_target, "--target", "--pred")):
        if names:
            more = f", ... ({len(names) - SHOW} more)" if len(names) > SHOW else ""
            problems.append(f"{len(names)} image(s) in {here} have no image of the same name in {there}: "
                            f"{', '.join(names[:SHOW])}{more}")
    if problems:
        raise EvalInputError("; ".join(problems) + ". Images are matched by file name (the extension may differ).")
    return [(name, a[name], b[name]) for name in sorted(a)]


class UnreadableImage(VidtriplaneError):
    """An image file of a folder being evaluated that cannot be decoded (exit code 1)."""


def _read(path: Path, size: int) -> torch.Tensor:
    try:
        return load_image(path, size)
    except OSError as exc:
        raise UnreadableImage(f"cannot read {path} as an image ({type(exc).__name__}); replace it, or remove it "
                              "together with the image of the same name in the other folder") from None


@torch.no_grad()
def evaluate_pairs(pairs: list[tuple[str, Path, Path]], cfg: EvalConfig, nets: MetricNets, *,
                   label: str) -> Evaluation:
    """Score every (prediction, target) pair at ``cfg.size``."""
    acc = accumulator(nets, cfg.size)
    for i in range(0, len(pairs), cfg.batch_size):
        chunk = pairs[i:i + cfg.batch_size]
        y = torch.stack([_read(p, cfg.size) for _, p, _ in chunk])
        x = torch.stack([_read(t, cfg.size) for _, _, t in chunk])
        acc.add(x, y)
    return Evaluation(label=label, report=acc.report(), names=[n for n, _, _ in pairs])


# ---------------------------------------------------------------------------------------------------
# Output


def _num(v) -> Optional[float]:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _nanmean(values: list[float]) -> Optional[float]:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def to_json(ev: Evaluation, settings: Optional[dict] = None) -> dict:
    """``metrics.json``: averages, novel-view ID, runtime, why a metric is missing, per-image values."""
    r = ev.report
    out: dict = {"count": r.count, "mse": _num(r.mse), "lpips": _num(r.lpips), "msssim": _num(r.msssim),
                 "id": _num(r.id), "id_count": r.id_count, "missing": dict(r.missing), "evaluated": ev.label,
                 "id_definition": "raw cosine similarity (the v1 paper printed 0.5 * cos + 0.5)",
                 "mse_definition": "mean squared error of [-1, 1] images (divide by 4 for [0, 1])"}
    if ev.yaws:
        per_yaw = {f"{yaw:g}": _nanmean(ev.novel_id.get(yaw, [])) for yaw in ev.yaws}
        known = [v for v in per_yaw.values() if v is not None]
        out["novel_view_id"] = {"per_yaw": per_yaw, "mean": float(np.mean(known)) if known else None}
        if not ev.novel_id:
            out["missing"]["novel_view_id"] = r.missing.get("id", "the ID metric")
    if ev.seconds_per_image:
        out["seconds_per_image"] = float(np.mean(ev.seconds_per_image))
        out["seconds_per_image_std"] = float(np.std(ev.seconds_per_image))
    per_image: dict = {"name": list(ev.names)}
    per_image.update({k: [_num(v) for v in vals] for k, vals in r.per_image.items()})
    if ev.novel_id:
        per_image["novel_view_id"] = {f"{yaw:g}": [_num(v) for v in vals] for yaw, vals in ev.novel_id.items()}
    out["per_image"] = per_image
    if ev.notes:
        out["notes"] = list(ev.notes)
    if settings:
        out["settings"] = settings
    return out


def table(metrics: dict) -> str:
    """The paper's table layout (Table 2: same view; Table 3: novel-view ID) as text."""
    def cell(v, fmt="{:.4f}") -> str:
        return "n/a" if v is None else fmt.format(v)

    label = Path(str(metrics.get("evaluated", "model"))).name[:24]
    secs = metrics.get("seconds_per_image")
    lines = [f"{'':24s} {'L2 (MSE)':>9s} {'LPIPS':>7s} {'ID':>7s} {'MS-SSIM':>8s} {'time per image':>15s}",
             f"{label:24s} {cell(metrics['mse']):>9s} {cell(metrics['lpips']):>7s} {cell(metrics['id']):>7s} "
             f"{cell(metrics['msssim']):>8s} {cell(secs, '{:.3f} s'):>15s}"]
    novel = metrics.get("novel_view_id")
    if novel:
        yaws = list(novel["per_yaw"])
        lines += ["", "novel-view ID, yaw (rad): " + " ".join(f"{y:>6s}" for y in yaws) + "  average",
                  f"{label:24s}  " + " ".join(f"{cell(v, '{:.3f}'):>6s}" for v in novel["per_yaw"].values())
                  + f"  {cell(novel['mean'], '{:.3f}')}"]
    for name, why in metrics.get("missing", {}).items():
        lines.append(f"{name}: not computed ({why})")
    lines.append(f"({metrics['count']} images; L2 = MSE of [-1, 1] images; ID = raw cosine, the v1 paper printed "
                 "0.5 * cos + 0.5)")
    return "\n".join(lines)


__all__ = ["EvalInputError", "Evaluation", "UnreadableImage", "accumulator", "evaluate_model", "evaluate_pairs",
           "load_metric_nets", "novel_camera", "pair_folders", "table", "to_json"]
