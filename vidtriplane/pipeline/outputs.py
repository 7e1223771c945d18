"""Which output files a render config writes (light: no torch, so planning and ``--dry-run`` stay fast)."""
from __future__ import annotations

from pathlib import Path

from vidtriplane.config.render import PipelineConfig
from vidtriplane.errors import UsageError


def output_names(cfg: PipelineConfig) -> list[str]:
    """Names of the outputs of one video: ``[""]``, or the view names with one output per view."""
    comp = cfg.composite
    if comp.views_output == "separate" and len(cfg.render.views) > 1 and comp.layout != "paste":
        return [v.name for v in cfg.render.views]
    return [""]


def output_targets(target: str | Path, names: list[str]) -> dict[str, str]:
    """{output name: path or "-"}; several outputs get ``<stem>_<view><suffix>`` names."""
    if names == [""]:
        return {"": str(target)}
    if str(target) == "-":
        raise UsageError("one output per view cannot go to stdout; drop --separate-views "
                         "(composite.views_output=grid)")
    path = Path(target)
    return {name: str(path.with_name(f"{path.stem}_{name}{path.suffix}")) for name in names}


def planned_outputs(target: str | Path, cfg: PipelineConfig) -> dict[str, str]:
    """The files (or "-") one render job writes."""
    return output_targets(target, output_names(cfg))
