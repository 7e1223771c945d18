"""Presets, named pipelines and the one resolution order every command uses.

A *preset* is a YAML mapping onto one kind of config (``render``, ``preprocess``, ``train``, ``evaluate``);
``--config NAME`` means the same in every command: a preset name or a path to a ``.yaml`` file,
repeatable, applied in order. Presets are looked up

1. as a path, when the argument names an existing file;
2. in ``$VIDTRIPLANE_HOME/configs`` (user presets; see :func:`vidtriplane.paths.user_presets_dir`);
3. in the presets shipped inside the package (``vidtriplane/_presets/configs``).

A preset says which kind it is with a top-level ``kind:`` key; without one the kind is inferred from its
keys. A preset of another kind than the command expects is refused with a message naming both.

Resolution order (later wins): dataclass defaults -> (render only) the named pipeline's presets and its
``set`` mapping -> ``--config`` presets -> command-line flags -> ``--set key=value`` overrides.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from vidtriplane.config.base import ConfigError, apply_overrides, from_mapping, load_yaml, merge
from vidtriplane.config.evaluate import EvalConfig
from vidtriplane.config.preprocess import PreprocessConfig
from vidtriplane.config.render import PipelineConfig
from vidtriplane.config.train import TrainConfig
from vidtriplane.paths import home_dir, package_presets_dir

#: config kind -> the dataclass a preset of that kind maps onto
KINDS: dict[str, type] = {
    "render": PipelineConfig,
    "preprocess": PreprocessConfig,
    "train": TrainConfig,
    "evaluate": EvalConfig,
}
PIPELINE_KEYS = {"description", "stages", "presets", "set"}


def register_kind(kind: str, cls: type) -> None:
    """Make presets of ``kind`` loadable (called by config modules of other commands)."""
    KINDS[kind] = cls


def search_dirs(folder: str) -> list[Path]:
    """Where presets (``configs``) or pipeline definitions (``pipelines``) are looked up, in order."""
    return [home_dir() / folder, package_presets_dir(folder)]


def _names(folder: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in reversed(search_dirs(folder)):  # earlier folders win
        if directory.is_dir():
            found.update({p.stem: p for p in directory.glob("*.yaml")})
    return dict(sorted(found.items()))


def find(name: str | Path, folder: str = "configs") -> Path:
    """The file of preset/pipeline ``name`` (a path, or a name in :func:`search_dirs`)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise ConfigError(f"config file {path} does not exist")
    candidates = _names(folder)
    if str(name) in candidates:
        return candidates[str(name)]
    what = "pipeline" if folder == "pipelines" else "preset"
    raise ConfigError(f"no {what} named {str(name)!r}; available: {', '.join(candidates) or 'none'} "
                      f"(or give a path to a .yaml file)")


def kind_of(data: Mapping[str, Any]) -> Optional[str]:
    """The kind a preset declares (``kind:``), or the only kind whose top-level keys fit it (None if several)."""
    if "kind" in data:
        return str(data["kind"])
    keys = set(data)
    fits = [k for k, cls in KINDS.items() if keys <= {f.name for f in dataclasses.fields(cls)}]
    return fits[0] if len(fits) == 1 else None


def presets_of_kind(kind: str) -> list[str]:
    """Names of the presets of one kind (for messages and ``--help``)."""
    out = []
    for name, path in _names("configs").items():
        try:
            if kind_of(load_yaml(path)) == kind:
                out.append(name)
        except ConfigError:
            continue
    return out


def load_preset(name: str | Path, kind: str) -> dict[str, Any]:
    """A preset's mapping (without ``kind``), refused unless it is a ``kind`` preset."""
    if kind not in KINDS:
        raise ConfigError(f"unknown config kind {kind!r}; known: {', '.join(KINDS)}")
    path = find(name)
    data = load_yaml(path)
    found = kind_of(data)
    if found is not None and found != kind:
        label = f"{name!r} ({path})" if str(name) != str(path) else str(path)
        raise ConfigError(f"preset {label} is a {found} config, but this command expects a {kind} config; "
                          f"{kind} presets: {', '.join(presets_of_kind(kind)) or 'none'}")
    if found is None:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(KINDS[kind])})
        if unknown:
            raise ConfigError(f"preset {path} has keys {unknown} that a {kind} config does not have; "
                              f"add `kind: ...` to say which command it is for")
    data.pop("kind", None)
    return data


def load_pipeline(name: str | Path) -> dict[str, Any]:
    """A render pipeline definition (``pipelines/NAME.yaml`` or a path) as a render config mapping.

    A definition has ``description``, ``stages``, ``presets`` (render preset names) and ``set`` (a
    nested mapping applied after the presets).
    """
    path = find(name, "pipelines")
    spec = load_yaml(path)
    unknown = sorted(set(spec) - PIPELINE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; a pipeline has {', '.join(sorted(PIPELINE_KEYS))}")
    data: dict[str, Any] = {"name": Path(name).stem}
    for preset in spec.get("presets") or []:
        data = merge(data, load_preset(preset, "render"))
    data = merge(data, spec.get("set") or {})
    if "stages" in spec:
        data["stages"] = list(spec["stages"])
    return data


def resolve(
    kind: str,
    *,
    configs: Sequence[str | Path] = (),
    flags: Optional[Mapping[str, Any]] = None,
    overrides: Sequence[str] = (),
    pipeline: str | Path | None = None,
) -> Any:
    """The final config of ``kind`` (see the module docstring for the order)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown config kind {kind!r}; known: {', '.join(KINDS)}")
    data: dict[str, Any] = {}
    if kind == "render" and pipeline is None:
        pipeline = "default"
    if pipeline is not None:
        if kind != "render":
            raise ConfigError("named pipelines exist for render configs only")
        data = load_pipeline(pipeline)
    for name in configs:
        data = merge(data, load_preset(name, kind))
    if flags:
        data = merge(data, flags)
    cfg = from_mapping(KINDS[kind], data)
    return apply_overrides(cfg, list(overrides)) if overrides else cfg
