"""Render configuration: presets, named pipelines, precedence, validation messages."""
from __future__ import annotations

import pytest

from vidtriplane.config import ConfigError
from vidtriplane.render_config import (CONFIG_DIR, PIPELINE_DIR, PipelineConfig, available, load_pipeline,
                                       resolve_config)


@pytest.mark.parametrize("name", available(PIPELINE_DIR))
def test_every_pipeline_resolves(name):
    cfg = resolve_config(pipeline=name)
    assert cfg.name == name and cfg.stages[-1] == "composite"


RENDER_PRESETS = ["render", "fast-cpu", "generated-tiny", "paste", "orbit"]  # configs/preprocess*.yaml map onto
# PreprocessConfig (the preprocess command), not onto the render config


def test_render_presets_exist():
    assert set(RENDER_PRESETS) <= set(available(CONFIG_DIR))


@pytest.mark.parametrize("name", RENDER_PRESETS)
def test_every_preset_applies(name):
    assert isinstance(resolve_config(config_files=[name]), PipelineConfig)


def test_precedence_presets_files_flags_overrides(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("render: {depth_samples: 64, importance_samples: 32}\nruntime: {batch_size: 3}\n")
    cfg = resolve_config(pipeline="fast-cpu", config_files=[own], flags={"runtime": {"batch_size": 5}},
                         overrides=["render.importance_samples=8"])
    assert cfg.render.depth_samples == 64  # file beats the pipeline's preset (48)
    assert cfg.runtime.batch_size == 5  # flag beats file
    assert cfg.render.importance_samples == 8  # --set beats everything
    assert cfg.composite.tile == 256  # from the fast-cpu preset
    assert load_pipeline("orbit")["composite"]["layout"] == "crop"  # a pipeline's own `set`


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["stages=[invert, render, composite]"], "exactly one of the stages"),
        (["stages=[aligned, render, invert, composite]"], "in the order"),
        (["render.views=[]"], "at least one view"),
        (["render.views=[{name: a}, {name: a}]"], "unique"),
        (["render.views=[{name: same}]"], "reserved"),
        (["composite.layout=paste", "composite.paste_view=nope"], "not a view name"),
        (["model.size=tiny"], "generated"),
        (["render.views=[{mode: spin}]"], "spin"),
    ],
)
def test_invalid_configs_say_why(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(overrides=overrides)


def test_unknown_pipeline_lists_the_available_ones():
    with pytest.raises(ConfigError, match="aligned"):
        resolve_config(pipeline="nope")
