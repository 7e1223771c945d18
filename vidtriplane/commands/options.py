"""Click options shared by the commands, defined once (``@config_options("render")`` etc.)."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import click

Decorator = Callable[[Callable], Callable]


def finite(ctx: click.Context, param: click.Parameter, value: Optional[float]) -> Optional[float]:
    """Click callback refusing NaN and infinities in a float option (FloatRange lets them through)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number.")
    return value


def _stack(*decorators: Decorator) -> Decorator:
    def apply(fn: Callable) -> Callable:
        for deco in reversed(decorators):
            fn = deco(fn)
        return fn
    return apply


def config_options(kind: str) -> Decorator:
    """``--config`` (preset name or YAML file, repeatable), ``--set KEY=VALUE`` (repeatable), ``--dry-run``."""
    return _stack(
        click.option("-c", "--config", "configs", multiple=True, metavar="PRESET",
                     help=f"A {kind} preset name or a YAML file (repeatable, applied in order; "
                          f"`vidtriplane presets` lists them)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override any config key (repeatable), e.g. --set render.depth_samples=48."),
        click.option("--dry-run", is_flag=True, help="Print the resolved config (and planned outputs); run nothing."),
    )


def device_option(fn: Callable) -> Callable:
    return click.option("--device", default=None, metavar="DEVICE",
                        help="auto (CUDA when available), cpu, cuda, cuda:1 [auto].")(fn)


def batch_size_option(help: str = "Frames per device batch (0 = automatic).", minimum: int = 0) -> Decorator:
    return click.option("--batch-size", type=click.IntRange(minimum, 4096), default=None, help=help)


def input_options(fn: Callable) -> Callable:
    """--input-format and the rawvideo geometry (--raw-size/--raw-pix-fmt/--raw-rate) of stdin or a file."""
    return _stack(
        click.option("--input-format", default=None,
                     help="Force the input container (y4m, nut, matroska, mpegts, mp4, rawvideo)."),
        click.option("--raw-size", default=None, metavar="WxH", help="rawvideo input: frame size."),
        click.option("--raw-pix-fmt", default=None, help="rawvideo input: pixel format [rgb24]."),
        click.option("--raw-rate", default=None, help="rawvideo input: frame rate [25]."),
    )(fn)


def check_raw_input(reader: Any) -> None:
    """A rawvideo input's --raw-size / --raw-pix-fmt / --raw-rate (``ReaderConfig``) checked before anything
    loads: a usage error (exit 2). Other formats need nothing."""
    if reader.format != "rawvideo":
        return
    from vidtriplane.errors import UsageError
    from vidtriplane.io.reader import InputError, check_raw_options

    try:
        check_raw_options(reader)
    except InputError as exc:
        raise UsageError(str(exc)) from None


def overwrite_option(help: str) -> Decorator:
    """--overwrite: without it, an existing output is a usage error (``help`` says what is replaced)."""
    return click.option("--overwrite", is_flag=True, help=help)


def report_option(fn: Callable) -> Callable:
    return click.option("--report", is_flag=True,
                        help="Write a JSON report beside each output (<output stem>.report.json; stderr for -o -).")(fn)


def verbosity_options(fn: Callable) -> Callable:
    """``-q/--quiet`` (warnings and errors only, no progress bar) and ``-v/--verbose`` (debug lines and
    tracebacks); the command calls ``setup_logging(quiet, verbose)``."""
    return _stack(
        click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only; no progress bar."),
        click.option("-v", "--verbose", is_flag=True, help="Debug messages, and the traceback of an error."),
    )(fn)


def engine_options(*, segments: bool = False) -> Decorator:
    """``--engine local|ray`` and the Ray options (``--address``, ``--workers``, ``--gpus-per-worker``,
    ``--cpus-per-worker``; ``--segment-frames`` where a video can be cut). The command receives one
    ``engine`` argument, a :class:`~vidtriplane.runners.engine.Engine`."""
    options = [
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="local: this process; ray: Ray workers on this machine or a cluster (pip install "
                          "'vidtriplane[ray]'). Ray needs inputs and outputs on storage every node shares."),
        click.option("--address", default=None, metavar="ADDRESS",
                     help="Ray cluster to join (auto, HOST:PORT) [$RAY_ADDRESS, else start Ray here]."),
        click.option("--workers", type=click.IntRange(0), default=None,
                     help="Ray workers, each loading the models once [0: as many as the cluster holds]."),
        click.option("--gpus-per-worker", type=click.FloatRange(0), default=None, callback=finite,
                     help="GPUs per Ray worker; fractions share a GPU [1 if the cluster has GPUs, else 0]."),
        click.option("--cpus-per-worker", type=click.FloatRange(0), default=None, callback=finite,
                     help="CPUs per Ray worker [1]."),
    ]
    if segments:
        options.append(click.option(
            "--segment-frames", type=click.IntRange(0), default=None,
            help="Ray: cut videos into segments of N frames (rounded up to the batch size), rendered by "
                 "different workers and stitched into one output identical to a local run. [a single video: "
                 "two segments per worker; folders: whole videos]; 0: never cut."))

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def command(*args: Any, engine: str, address: Optional[str], workers: Optional[int],
                    gpus_per_worker: Optional[float], cpus_per_worker: Optional[float],
                    segment_frames: Optional[int] = None, **kwargs: Any) -> Any:
            return fn(*args, engine=make_engine(engine, address, workers, gpus_per_worker, cpus_per_worker,
                                                segment_frames, kwargs), **kwargs)

        return _stack(*options)(command)

    return decorate


def make_engine(name: str, address: Optional[str], workers: Optional[int], gpus_per_worker: Optional[float],
                cpus_per_worker: Optional[float], segment_frames: Optional[int], others: dict):
    """The Engine of the options (Ray options with ``--engine local`` are a usage error)."""
    import logging

    from vidtriplane.runners.engine import Engine, RayOptions

    given = {"--address": address, "--workers": workers, "--gpus-per-worker": gpus_per_worker,
             "--cpus-per-worker": cpus_per_worker, "--segment-frames": segment_frames}
    if name == "local":
        used = [flag for flag, value in given.items() if value is not None]
        if used:
            raise click.UsageError(f"{', '.join(used)} only apply to --engine ray")
        return Engine("local")
    level = logging.DEBUG if others.get("verbose") else logging.WARNING
    return Engine("ray", RayOptions(address=address, workers=workers or 0, gpus_per_worker=gpus_per_worker,
                                    cpus_per_worker=1.0 if cpus_per_worker is None else cpus_per_worker,
                                    segment_frames=segment_frames, progress=not others.get("quiet"),
                                    log_level=level))
