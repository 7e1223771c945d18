"""``vidtriplane export-mesh``: the inverted head as a triangle mesh (``tpn:scripts/inference.py --shapes``).

INPUT is an aligned crop whose camera label is in the ``dataset.json`` beside it, or a video whose
``--frames`` go through the render pipeline's face preprocessing (or, with ``--aligned``, are taken as
aligned crops at the frontal camera). Each image is inverted once; the density of its tri-planes is
sampled on a grid over the ``box_warp`` cube and meshed with marching cubes (``vidtriplane.geometry.mesh``).
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Optional

import click

from vidtriplane.commands.common import setup_logging
from vidtriplane.commands.options import device_option, finite, overwrite_option, verbosity_options
from vidtriplane.errors import UsageError

log = logging.getLogger("vidtriplane")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def parse_frames(text: str) -> list[int]:
    """``"0,10,20"`` -> [0, 10, 20] (sorted, unique, non-negative)."""
    try:
        frames = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--frames {text!r}: give frame numbers separated by commas, e.g. 0,10,20") from None
    if not frames or frames[0] < 0:
        raise UsageError(f"--frames {text!r}: give one or more frame numbers >= 0")
    return frames


def image_with_label(path: Path):
    """(uint8 [1, H, W, 3] crop, float32 [1, 25] label) of an aligned crop listed in the dataset.json beside it."""
    import numpy as np

    from vidtriplane.pipeline.dataset import read_image

    meta = path.parent / "dataset.json"
    if not meta.is_file():
        raise UsageError(f"{path} needs its camera label: there is no dataset.json beside it (make the folder with "
                         "`vidtriplane preprocess`), or give a video")
    try:
        labels = {str(name).replace("\\", "/"): value for name, value in json.loads(meta.read_text())["labels"]}
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{meta} is not in the official format {{\"labels\": [[name, [25 numbers]], ...]}}") from None
    if path.name not in labels:
        raise UsageError(f"{meta} has no label for {path.name}")
    label = np.asarray(labels[path.name], dtype=np.float32)
    if label.shape != (25,) or not np.isfinite(label).all():
        raise UsageError(f"{meta}: the label of {path.name} is not 25 finite numbers")
    return read_image(path)[None], label[None]


def video_frames(path: Path, frames: list[int], aligned: bool):
    """(crops [N, 512, 512, 3], labels [N, 25], frame numbers found) of the requested frames of a video."""
    import numpy as np

    from vidtriplane.config import resolve
    from vidtriplane.config.media import ReaderConfig
    from vidtriplane.io.reader import open_video
    from vidtriplane.stages import aligned as aligned_stage

    wanted = set(frames)
    crops, labels, found = [], [], []
    runner = None
    if not aligned:
        from vidtriplane.stages import preprocess as pp

        cfg = resolve("preprocess")
        runner = pp.Preprocessor(pp.load_models(cfg), cfg, None)
    reader = open_video(str(path), ReaderConfig(audio=False))
    try:
        for batch in reader.batches(8):
            if int(batch.index[0]) > frames[-1]:
                break
            out = aligned_stage.apply(batch) if aligned else runner(batch)  # face tracking needs every frame
            for j, index in enumerate(batch.index):
                if int(index) in wanted:
                    crops.append(out.crops[j])
                    labels.append(out.labels[j])
                    found.append(int(index))
    finally:
        reader.close()
    missing = sorted(wanted - set(found))
    if missing:
        raise UsageError(f"{path} has no frame(s) {missing} (frames are numbered from 0)")
    return np.stack(crops), np.stack(labels).astype(np.float32), found


def output_paths(output: Path, frames: Optional[list[int]]) -> list[Path]:
    """OUT.ply for one mesh; OUT_000010.ply, ... for several frames."""
    if frames is None or len(frames) == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{f:06d}{output.suffix}") for f in frames]


@click.command("export-mesh", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("src", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="OUT.ply",
              help="Mesh file (.ply or .obj); several frames give OUT_<frame>.ply.")
@click.option("--frames", default="0", show_default=True, help="Video input: frame numbers, e.g. 0,10,20.")
@click.option("--aligned", is_flag=True, help="Video input: the frames already are aligned crops (frontal camera).")
@click.option("--weights", default="registry", show_default=True, metavar="registry|generated|FILE",
              help="Official checkpoints, generated weights (tests), or a checkpoint file such as best.pt.")
@click.option("--model-size", type=click.Choice(["full", "tiny"]), default="full", show_default=True)
@click.option("--model-version", "version", type=click.IntRange(1, 2), default=1, show_default=True)
@click.option("--eg3d", default="eg3d-ffhq512-128", show_default=True, help="EG3D registry entry ('' = none).")
@click.option("--resolution", type=click.IntRange(8, 1024), default=256, show_default=True,
              help="Density grid points per axis (the official 256).")
@click.option("--level", type=float, default=10.0, show_default=True, callback=finite,
              help="Marching-cubes density level.")
@click.option("--cttr", is_flag=True, help="One cascaded test-time refinement pass (v1).")
@device_option
@overwrite_option("Replace mesh files that already exist.")
@verbosity_options
def command(src: str, output: str, frames: str, aligned: bool, weights: str, model_size: str, version: int,
            eg3d: str, resolution: int, level: float, cttr: bool, device: Optional[str], overwrite: bool,
            quiet: bool, verbose: bool) -> None:
    """Export the 3D shape of an inverted face as a mesh.

    \b
    Examples:
      vidtriplane export-mesh data/clip/000000.png -o head.ply
      vidtriplane export-mesh talk.mp4 --frames 0,50,100 -o heads.ply --weights runs/v1/checkpoints/best.pt
    """
    setup_logging(quiet, verbose)
    import numpy as np
    import torch

    from vidtriplane.config.render import ModelConfig
    from vidtriplane.geometry.mesh import extract_mesh, write_mesh
    from vidtriplane.pipeline.build import build_network, resolve_device
    from vidtriplane.runners.render import resolve_weight_files
    from vidtriplane.stages.invert import input_size, network_input
    from vidtriplane.weights.store import atomic_write

    out = Path(output)
    if out.suffix.lower() not in (".ply", ".obj"):
        raise UsageError(f"-o {output}: the mesh file must end in .ply or .obj")
    path = Path(src)
    is_image = path.suffix.lower() in IMAGE_SUFFIXES
    wanted = None if is_image else parse_frames(frames)
    existing = [str(p) for p in output_paths(out, wanted) if p.exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise UsageError(f"{shown} already {'exists' if len(existing) == 1 else 'exist'}; pass --overwrite to replace "
                         f"{'it' if len(existing) == 1 else 'them'}, or choose another -o")
    if is_image:
        crops, labels = image_with_label(path)
        numbers = None
    else:
        crops, labels, numbers = video_frames(path, wanted, aligned)
    try:
        model = ModelConfig(weights=weights, size=model_size, version=version, eg3d=eg3d)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    dev = resolve_device(device or "auto")
    net = build_network(model, resolve_weight_files(model)).to(dev)
    x = network_input(crops, input_size(net), dev)
    c = torch.from_numpy(np.asarray(labels)).to(dev)
    G = net.decoder
    for i, target in enumerate(output_paths(out, numbers)):
        with torch.no_grad():
            inv = net.encode(x[i:i + 1], c[i:i + 1], cttr_steps=1 if cttr else 0)
            mesh = extract_mesh(inv.planes, G.decoder, box_warp=G.cfg.box_warp, resolution=resolution, level=level)
        # written to a temp file and renamed: a kill never leaves half a mesh under the name
        atomic_write(target, functools.partial(write_mesh, mesh=mesh, suffix=target.suffix))
        if mesh.is_empty:
            log.warning("%s: no surface at density level %g (empty mesh); try another --level", target, level)
        log.info("%s: %d vertices, %d faces", target, len(mesh.vertices), len(mesh.faces))
