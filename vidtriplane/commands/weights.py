"""``vidtriplane weights``: list, fetch, import and verify the model weights in the cache."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable

import click


def _friendly_errors(func: Callable) -> Callable:
    """Turn the weights package's errors into one clear CLI message (exit code 1), no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from vidtriplane.weights import ChecksumMismatch, DownloadError, UnknownWeights, WeightsMissing
        from vidtriplane.weights.pickle_safe import PickleFormatError, UnsafePickle
        from vidtriplane.weights.validate import InvalidWeights

        try:
            return func(*args, **kwargs)
        except UnsafePickle as err:
            raise click.ClickException(f"unsafe pickle rejected: {err}") from None
        except (UnknownWeights, WeightsMissing, ChecksumMismatch, DownloadError, InvalidWeights,
                PickleFormatError, FileNotFoundError, FileExistsError) as err:
            raise click.ClickException(str(err)) from None

    return wrapper


def _offline(ctx: click.Context) -> bool | None:
    """True when --offline was given; None lets the API read VIDTRIPLANE_OFFLINE."""
    return True if ctx.parent is not None and ctx.parent.params.get("offline") else None


@click.group("weights", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--offline", is_flag=True, help="Never download (same as VIDTRIPLANE_OFFLINE=1).")
def command(offline: bool) -> None:
    """Model weights: list, fetch, import and verify the files in the cache.

    The cache is $VIDTRIPLANE_HOME, else $XDG_CACHE_HOME/vidtriplane, else ~/.cache/vidtriplane.

    \b
    Examples:
      vidtriplane weights list
      vidtriplane weights fetch triplanenet-v1
      vidtriplane weights import eg3d-ffhq512-128-pkl ~/Downloads/ffhq512-128.pkl
      vidtriplane weights verify
      VIDTRIPLANE_OFFLINE=1 vidtriplane render in.mp4 -o out.mp4
    """


@command.command("list")
def list_command() -> None:
    """Table of the known weights: name, status in the cache, size, licence."""
    from vidtriplane.weights import REGISTRY, cache_dir
    from vidtriplane.weights.store import status

    rows = [("NAME", "STATUS", "SIZE", "LICENCE")]
    for entry in REGISTRY.values():
        rows.append((entry.name, status(entry).describe(entry), entry.display_size, entry.licence))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    click.echo(f"cache: {cache_dir()}")
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])


@command.command("fetch")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--force", is_flag=True, help="Download again even when the file is cached.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@_friendly_errors
def fetch_command(ctx: click.Context, names: tuple[str, ...], force: bool, quiet: bool) -> None:
    """Download weights into the cache (resumes an interrupted download; `all` fetches everything)."""
    from vidtriplane.weights import REGISTRY, fetch, get_entry

    wanted = list(REGISTRY) if names == ("all",) else [get_entry(n).name for n in names]
    for name in wanted:
        result = fetch(name, force=force, offline=_offline(ctx), progress=not quiet)
        if result.report is None:
            click.echo(f"{name}: already cached at {result.path} (use --force to download again)", err=True)
            continue
        for warning in result.report.warnings:
            click.echo(f"warning: {name}: {warning}", err=True)
        click.echo(f"{name}: {result.report.summary}; stored at {result.path}", err=True)


@command.command("import")
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a file that is already cached.")
@_friendly_errors
def import_command(name: str, path: Path, force: bool) -> None:
    """Check a hand-downloaded file (keys and shapes) and copy it into the cache.

    NVIDIA's EG3D .pkl is read without running its embedded code and stored as safetensors + JSON.
    """
    from vidtriplane.weights import import_file

    result = import_file(name, path, force=force)
    assert result.report is not None
    for warning in result.report.warnings:
        click.echo(f"warning: {name}: {warning}", err=True)
    click.echo(f"{name}: {result.report.summary}", err=True)
    click.echo(f"{name}: sha256 {result.published_sha256}; stored at {result.path}", err=True)


@command.command("verify")
@click.argument("name", required=False)
@_friendly_errors
def verify_command(name: str | None) -> None:
    """Recompute the sha256 of cached files and compare with the pinned ones (exit 1 on a mismatch)."""
    from vidtriplane.weights import verify

    results = verify(name)
    for r in results:
        digest = r.sha256 or "-"
        click.echo(f"{r.entry.name:22s} {r.state.upper():9s} {digest}  {r.detail}")
    bad = [r.entry.name for r in results if r.state == "mismatch"]
    if bad:
        raise click.ClickException(f"checksum mismatch: {', '.join(bad)}; fetch again with --force")
    if name and results[0].state == "missing":
        sys.exit(1)


@command.command("path")
@click.argument("name")
@click.pass_context
@_friendly_errors
def path_command(ctx: click.Context, name: str) -> None:
    """Print the cached file's path (downloads it first unless offline)."""
    from vidtriplane.weights import resolve

    click.echo(str(resolve(name, offline=_offline(ctx))))
