"""``vidtriplane presets``: the config presets and named pipelines, by kind."""
from __future__ import annotations

import click


def _description(path) -> str:
    """A preset's first comment block (its lines joined), or a pipeline's ``description``."""
    from vidtriplane.config import load_yaml

    block: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            block.append(line.lstrip("# ").strip())
        elif block:
            break
    if block:
        return " ".join(part for part in block if part)
    description = load_yaml(path).get("description", "")
    return " ".join(str(description).split())


@click.command("presets", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("kind", required=False)
def command(kind: str | None) -> None:
    """List presets (for --config) and render pipelines (for --pipeline); KIND narrows to one kind.

    Presets come from $VIDTRIPLANE_HOME/configs (yours) and from the package.
    """
    from vidtriplane.config.presets import KINDS, _names, kind_of, load_yaml, search_dirs

    if kind is not None and kind not in KINDS:
        raise click.UsageError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for name, path in _names("configs").items():
        found = kind_of(load_yaml(path)) or "?"
        by_kind.setdefault(found, []).append((name, _description(path)))
    for k in KINDS:
        if kind in (None, k) and by_kind.get(k):
            click.echo(f"{k} presets (--config):")
            for name, text in by_kind[k]:
                click.echo(f"  {name:22s} {text}")
    if kind in (None, "render"):
        click.echo("render pipelines (--pipeline):")
        for name, path in _names("pipelines").items():
            click.echo(f"  {name:22s} {_description(path)}")
    click.echo(f"user presets folder: {search_dirs('configs')[0]}")
