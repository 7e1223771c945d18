"""``vidtriplane weights``: list, fetch, import and verify the model weights in the store.

Listings (``list``, ``path``, the ``verify`` table) are data and go to stdout; everything else is
logged (loggers under ``vidtriplane.``) to stderr, so ``-q`` leaves warnings and errors only.
"""
from __future__ import annotations

import logging
from pathlib import Path

import click

from vidtriplane.commands.common import setup_logging
from vidtriplane.commands.options import verbosity_options

log = logging.getLogger(__name__)


def _options(ctx: click.Context) -> dict:
    """The group's options: ``offline`` (True, or None to let the API read VIDTRIPLANE_OFFLINE) and ``quiet``."""
    params = ctx.parent.params if ctx.parent is not None else {}
    return {"offline": True if params.get("offline") else None, "quiet": bool(params.get("quiet"))}


@click.group("weights", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--offline", is_flag=True, help="Never download (same as VIDTRIPLANE_OFFLINE=1).")
@verbosity_options
def command(offline: bool, quiet: bool, verbose: bool) -> None:
    """Model weights: list, fetch, import and verify the files in the store.

    The store is $VIDTRIPLANE_HOME, else $XDG_CACHE_HOME/vidtriplane, else ~/.cache/vidtriplane.

    \b
    Examples:
      vidtriplane weights list
      vidtriplane weights fetch triplanenet-v1
      vidtriplane weights import eg3d-ffhq512-128-pkl ~/Downloads/ffhq512-128.pkl
      vidtriplane weights -q verify
      VIDTRIPLANE_OFFLINE=1 vidtriplane render in.mp4 -o out.mp4
    """
    setup_logging(quiet, verbose)


@command.command("list")
def list_command() -> None:
    """Table of the known weights: name, status in the store, size, licence."""
    from vidtriplane.weights.registry import REGISTRY
    from vidtriplane.weights.store import cache_dir, status

    rows = [("NAME", "STATUS", "SIZE", "LICENCE")]
    for entry in REGISTRY.values():
        rows.append((entry.name, status(entry).describe(entry), entry.display_size, entry.licence))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    click.echo(f"cache: {cache_dir()}")
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])


@command.command("fetch")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--force", is_flag=True, help="Download again even when the file is stored.")
@click.option("--quiet", "-q", "no_progress", is_flag=True, help="No progress bar.")
@click.pass_context
def fetch_command(ctx: click.Context, names: tuple[str, ...], force: bool, no_progress: bool) -> None:
    """Download weights into the store (resumes an interrupted download; `all` fetches everything)."""
    from vidtriplane.weights.api import fetch
    from vidtriplane.weights.registry import REGISTRY, get_entry

    opts = _options(ctx)
    wanted = list(REGISTRY) if names == ("all",) else [get_entry(n).name for n in names]
    for name in wanted:
        result = fetch(name, force=force, offline=opts["offline"], progress=not (no_progress or opts["quiet"]))
        if result.report is None:
            log.info("%s: already stored at %s (use --force to download again)", name, result.path)
            continue
        _report(name, result.report)
        log.info("%s: stored at %s", name, result.path)


@command.command("import")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace a file that is already stored.")
def import_command(name: str, path: Path, force: bool) -> None:
    """Check a hand-downloaded file (format, keys and shapes) and copy it into the store.

    NVIDIA's EG3D .pkl is read without running its embedded code and stored as safetensors + JSON.
    mtcnn takes the facenet-pytorch wheel, one of its pnet.pt / rnet.pt / onet.pt, or a folder holding
    the three; they are stored as one mtcnn.pt.
    """
    from vidtriplane.weights.api import import_file

    result = import_file(name, path, force=force)
    assert result.report is not None
    _report(name, result.report)
    log.info("%s: sha256 %s; stored at %s", name, result.published_sha256, result.path)


def _report(name: str, report) -> None:
    for warning in report.warnings:
        log.warning("%s: %s", name, warning)
    log.info("%s: %s", name, report.summary)


@command.command("verify")
@click.argument("name", required=False)
def verify_command(name: str | None) -> None:
    """Recompute the sha256 of stored files and compare with the pinned ones.

    Exits 1 on a mismatch, and when nothing could be checked (the named file, or every file, is missing).
    """
    from vidtriplane.weights.api import import_command as import_line
    from vidtriplane.weights.api import verify
    from vidtriplane.weights.store import cache_dir

    results = verify(name)
    for r in results:
        click.echo(f"{r.entry.name:22s} {r.state.upper():9s} {r.sha256 or '-'}  {r.detail}")
    bad = [r.entry.name for r in results if r.state == "mismatch"]
    if bad:
        raise click.ClickException(f"checksum mismatch: {', '.join(bad)}; fetch again with "
                                   f"`vidtriplane weights fetch --force {' '.join(bad)}`")
    if all(r.state == "missing" for r in results):
        if name:
            raise click.ClickException(f"{name} is not in the store ({cache_dir()}): run `vidtriplane weights fetch "
                                       f"{name}`, or `{import_line(results[0].entry)}` with a downloaded copy")
        raise click.ClickException(f"nothing to verify: the store ({cache_dir()}) holds none of the weights; run "
                                   "`vidtriplane weights fetch NAME` (or `all`), or `vidtriplane weights import NAME "
                                   "PATH` with a downloaded copy")


@command.command("path")
@click.argument("name")
@click.pass_context
def path_command(ctx: click.Context, name: str) -> None:
    """Print the stored file's path (downloads it first unless offline)."""
    from vidtriplane.weights.api import resolve

    click.echo(str(resolve(name, offline=_options(ctx)["offline"], progress=not _options(ctx)["quiet"])))
