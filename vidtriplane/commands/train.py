"""``vidtriplane train``: train TriPlaneNet v1/v2 into a run folder, or resume one."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import click

from vidtriplane.commands.common import setup_logging
from vidtriplane.commands.options import batch_size_option, config_options, device_option, verbosity_options
from vidtriplane.errors import UsageError

log = logging.getLogger("vidtriplane")

CONFIG_NAME = "config.yaml"


def _flags(device: Optional[str], batch_size: Optional[int]) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    if device is not None:
        flags["runtime"] = {"device": device}
    if batch_size is not None:
        flags["train"] = {"batch_size": batch_size}
    return flags


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config mappings."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def saved_config(run_dir: Path):
    """The resolved config a run folder was started with."""
    from vidtriplane.config import from_mapping, load_yaml
    from vidtriplane.config.train import TrainConfig

    path = run_dir / CONFIG_NAME
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a training run folder (no {CONFIG_NAME}); start one with "
                         "`vidtriplane train -o RUN_DIR --config PRESET`")
    return from_mapping(TrainConfig, load_yaml(path))


def plan(output: Optional[str], resume: Optional[str], configs: tuple[str, ...], flags: dict,
         overrides: tuple[str, ...]):
    """(run folder, resolved config, resume?) for the command line; refuses what cannot be done."""
    from vidtriplane.config import apply_overrides, resolve, to_mapping
    from vidtriplane.train.checkpoint import LAST, checkpoint_dir

    if resume and output and Path(output) != Path(resume):
        raise UsageError("give either -o RUN_DIR (a new run) or --resume RUN_DIR, not both")
    if resume:
        if configs:
            raise UsageError("--resume continues a run with its own config.yaml; change settings with --set KEY=VALUE "
                             "instead of --config")
        run_dir = Path(resume)
        before = saved_config(run_dir)
        cfg = apply_overrides(apply_overrides(before, flags), list(overrides))
        old, new = before.model_identity, cfg.model_identity
        if new != old:
            changed = ", ".join(f"{k} {old[k]} -> {new[k]}" for k in _differences(old, new))
            raise UsageError(f"--resume cannot change the model ({changed}); train another model into a new folder")
        if not (checkpoint_dir(run_dir) / LAST).is_file():
            raise UsageError(f"{run_dir} has no checkpoint to resume yet ({checkpoint_dir(run_dir) / LAST}); "
                             f"start it again with `vidtriplane train -o {run_dir} --config ...`")
        return run_dir, cfg, True
    if not output:
        raise UsageError("give -o RUN_DIR for a new run, or --resume RUN_DIR to continue one")
    run_dir = Path(output)
    cfg = resolve("train", configs=configs, flags=flags, overrides=overrides)
    if (checkpoint_dir(run_dir) / LAST).is_file():
        before = saved_config(run_dir)
        changed = _differences(to_mapping(before), to_mapping(cfg))
        if changed:
            raise UsageError(f"{run_dir} already holds a run with another config ({', '.join(changed[:6])}"
                             f"{', ...' if len(changed) > 6 else ''}); continue it with `vidtriplane train --resume "
                             f"{run_dir} [--set KEY=VALUE]` or train into a new folder")
        log.info("%s holds a run with this config: resuming it", run_dir)
        return run_dir, cfg, True
    return run_dir, cfg, False


@click.command("train", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), default=None, metavar="RUN_DIR",
              help="Run folder: config.yaml, metrics.jsonl, images/, checkpoints/{last,best}.pt.")
@click.option("--resume", type=click.Path(file_okay=False, exists=True), default=None, metavar="RUN_DIR",
              help="Continue a run from RUN_DIR/checkpoints/last.pt with its own config (plus --set overrides).")
@config_options("train")
@batch_size_option("Samples per training step, over all processes (train.batch_size).", minimum=1)
@device_option
@verbosity_options
def command(output: Optional[str], resume: Optional[str], configs: tuple[str, ...], overrides: tuple[str, ...],
            dry_run: bool, batch_size: Optional[int], device: Optional[str], quiet: bool, verbose: bool) -> None:
    """Train TriPlaneNet (v1 or v2) on aligned crops + dataset.json and synthetic EG3D samples.

    \b
    Examples:
      vidtriplane train -o runs/tiny --config train-tiny            # minutes on a CPU, no weights needed
      vidtriplane train -o runs/v1 --config train-v1 --set data.dataset=data/ffhq
      vidtriplane train --resume runs/v1 --set train.max_steps=1200000
      torchrun --nproc_per_node 4 -m vidtriplane.cli train -o runs/v1 --config train-v1 --set data.dataset=data/ffhq
      vidtriplane render clip.mp4 -o out.mp4 --weights runs/v1/checkpoints/best.pt
    """
    setup_logging(quiet, verbose)
    from vidtriplane.config import dump

    run_dir, cfg, resuming = plan(output, resume, configs, _flags(device, batch_size), overrides)
    if dry_run:
        click.echo(dump(cfg), nl=False)
        click.echo(f"{'resume' if resuming else 'new run'}: {run_dir}", err=True)
        return
    from vidtriplane.train.loop import training_loop

    summary = training_loop(cfg, run_dir, resume=resuming, progress=not quiet)
    log.info("%d steps; last checkpoint %s; best validation loss %s", summary["steps"], summary["last"],
             summary.get("best_val_loss"))
