"""Click options shared by the commands, defined once (``@config_options("render")`` etc.)."""
from __future__ import annotations

from typing import Callable

import click

Decorator = Callable[[Callable], Callable]


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


def batch_size_option(fn: Callable) -> Callable:
    return click.option("--batch-size", type=click.IntRange(0, 4096), default=None,
                        help="Frames per device batch (0 = automatic).")(fn)


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
