"""``vidtriplane evaluate``: the paper's metrics for a model on aligned crops, or between two image folders."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import click

from vidtriplane.commands.common import setup_logging
from vidtriplane.commands.options import (batch_size_option, config_options, device_option, overwrite_option,
                                          verbosity_options)
from vidtriplane.errors import UsageError

log = logging.getLogger("vidtriplane")


def build_flags(**o: Any) -> dict[str, Any]:
    """Command-line flags -> a nested evaluate-config mapping (only the flags that were given)."""
    flags: dict[str, Any] = {}
    model = {k: v for k, v in (("weights", o["weights"]), ("size", o["model_size"]), ("version", o["version"]),
                               ("eg3d", o["eg3d"])) if v is not None}
    if model:
        flags["model"] = model
    for key in ("device", "batch_size"):
        if o[key] is not None:
            flags[key] = o[key]
    if o["yaws"]:
        flags["yaws"] = list(o["yaws"])
    if o["strips"]:
        flags["strips"] = True
    if o["cttr"]:
        flags["cttr"] = True
    return flags


def _write(out_dir: Path, metrics: dict, cfg) -> None:
    from vidtriplane.config import dump
    from vidtriplane.weights.store import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    (out_dir / "config.yaml").write_text(dump(cfg))


@click.command("evaluate", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("data_dir", required=False, type=click.Path(file_okay=False), metavar="[DATA_DIR]")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), metavar="OUT_DIR",
              help="Writes OUT_DIR/metrics.json (+ strips/ with --strips) and config.yaml.")
@click.option("--pred", type=click.Path(file_okay=False), default=None,
              help="Folder of predicted images (no model): compared with --target, matched by file name.")
@click.option("--target", type=click.Path(file_okay=False), default=None, help="Folder of reference images.")
@config_options("evaluate")
@click.option("--weights", default=None, metavar="registry|generated|FILE",
              help="The TriPlaneNet: official checkpoints (registry), generated, or a file such as best.pt.")
@click.option("--model-size", type=click.Choice(["full", "tiny"]), default=None, help="With --weights generated.")
@click.option("--model-version", "version", type=click.IntRange(1, 2), default=None,
              help="TriPlaneNet version (registry/generated).")
@click.option("--eg3d", default=None, help="EG3D registry entry giving latent_avg ('' = none).")
@click.option("--yaw", "yaws", type=float, multiple=True, help="Novel-view yaws (repeat) [the paper's -0.8 .. 0.8].")
@click.option("--strips", is_flag=True, help="Write OUT_DIR/strips/NAME.png: input | same view | novel views.")
@click.option("--cttr", is_flag=True, help="One cascaded test-time refinement pass (v1).")
@batch_size_option()
@device_option
@overwrite_option("Replace the metrics of an OUT_DIR that already holds them (earlier strips are removed).")
@verbosity_options
def command(data_dir: Optional[str], output: str, pred: Optional[str], target: Optional[str],
            configs: tuple[str, ...], overrides: tuple[str, ...], dry_run: bool, overwrite: bool, quiet: bool,
            verbose: bool, **flag_values: Any) -> None:
    """Evaluate like the paper: same-view MSE ([-1, 1]), LPIPS, MS-SSIM and ID, novel-view ID, time per image.

    DATA_DIR holds aligned crops + dataset.json (`vidtriplane preprocess` writes it). Without a model,
    --pred and --target compare two image folders with the same metrics.

    \b
    Examples:
      vidtriplane evaluate data/celeba_test --weights registry -o eval/v1
      vidtriplane evaluate data/celeba_test --weights runs/v1/checkpoints/best.pt -o eval/mine --strips
      vidtriplane evaluate --pred results/ --target data/celeba_test -o eval/folders
    """
    setup_logging(quiet, verbose)
    from vidtriplane.config import dump, resolve

    if (pred is None) != (target is None):
        raise UsageError("--pred and --target go together (two folders of images matched by file name)")
    if pred is not None and data_dir is not None:
        raise UsageError("give DATA_DIR (evaluate a model) or --pred/--target (compare folders), not both")
    if pred is None and data_dir is None:
        raise UsageError("give DATA_DIR (aligned crops + dataset.json) with --weights, or --pred DIR --target DIR")
    flags = build_flags(**flag_values)
    if data_dir is None and flags.get("model"):
        raise UsageError("--weights/--model-size/--model-version/--eg3d evaluate a model on DATA_DIR; --pred/--target "
                         "compare folders without one")
    cfg = resolve("evaluate", configs=configs, flags=flags, overrides=overrides)
    if dry_run:
        click.echo(dump(cfg), nl=False)
        return
    out_dir = Path(output)
    if (out_dir / "metrics.json").exists() and not overwrite:
        raise UsageError(f"{out_dir} already holds metrics.json; pass --overwrite to replace it, or choose another "
                         "output folder")
    if overwrite and (out_dir / "strips").is_dir():
        import shutil

        shutil.rmtree(out_dir / "strips")  # strips of an earlier run would sit beside the new metrics
    from vidtriplane.eval import protocol
    from vidtriplane.pipeline.build import resolve_device

    device = resolve_device(cfg.device)
    if pred is not None:
        pairs = protocol.pair_folders(Path(pred), Path(target))
        nets, notes = protocol.load_metric_nets(cfg, device)
        result = protocol.evaluate_pairs(pairs, cfg, nets, label=str(pred))
    else:
        result, notes = _evaluate_model(Path(data_dir), cfg, device, out_dir, progress=not quiet)
    result.notes.extend(notes)
    metrics = protocol.to_json(result, settings={"size": cfg.size, "depth_samples": cfg.depth_samples,
                                                  "importance_samples": cfg.importance_samples, "cttr": cfg.cttr,
                                                  "sampling": cfg.sampling})
    _write(out_dir, metrics, cfg)
    click.echo(protocol.table(metrics))
    log.info("wrote %s", out_dir / "metrics.json")


def _evaluate_model(data_dir: Path, cfg, device, out_dir: Path, *, progress: bool):
    from vidtriplane.eval import protocol
    from vidtriplane.pipeline.build import build_network
    from vidtriplane.runners.render import WeightsUnavailable, resolve_weight_files
    from vidtriplane.train.data import scan_dataset

    images = scan_dataset(data_dir, what="DATA_DIR")
    try:
        weights = resolve_weight_files(cfg.model)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing/undownloadable weights: one clear message
        raise WeightsUnavailable(str(exc)) from None
    net = build_network(cfg.model, weights).to(device)
    if cfg.cttr and not hasattr(net, "cttr_step"):
        raise UsageError("--cttr exists for TriPlaneNet v1 only")
    nets, notes = protocol.load_metric_nets(cfg, device)
    label = cfg.model.weights if cfg.model.weights not in ("registry",) else f"triplanenet-v{cfg.model.version}"
    result = protocol.evaluate_model(net, images, cfg, nets, device, label=label, progress=progress,
                                     strips=out_dir / "strips" if cfg.strips else None)
    return result, notes
