"""Configs of every command: frozen dataclasses, YAML presets, ``key=value`` overrides.

Nothing heavy is imported by this package (no torch, cv2 or av), so ``--help`` and ``--dry-run`` stay
instant. Modules:

* ``base``        the machinery: mapping <-> dataclass, overrides, YAML, dump;
* ``presets``     preset and pipeline lookup, the one resolution order (:func:`resolve`);
* ``media``       reader / writer configs;
* ``preprocess``  landmarks, crop, pose, smoothing, matting;
* ``render``      model, inversion, rendering, composite, runtime; ``PipelineConfig`` = a render run;
* ``train``       ``TrainConfig`` (model, data, loss weights, optimiser, schedule, runtime) of a training run;
* ``evaluate``    ``EvalConfig``: the official evaluation protocol's settings.
"""
from vidtriplane.config.base import (
    ConfigError,
    apply_overrides,
    dump,
    from_mapping,
    load_yaml,
    merge,
    parse_override,
    to_mapping,
)
from vidtriplane.config.presets import KINDS, load_pipeline, load_preset, presets_of_kind, resolve

__all__ = [
    "ConfigError", "KINDS", "apply_overrides", "dump", "from_mapping", "load_pipeline", "load_preset",
    "load_yaml", "merge", "parse_override", "presets_of_kind", "resolve", "to_mapping",
]
