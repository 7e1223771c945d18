"""Presets, named pipelines, precedence, preset kinds and where presets are looked up."""
from __future__ import annotations

import pytest

from vidtriplane.config import ConfigError, load_pipeline, presets_of_kind, resolve
from vidtriplane.config.preprocess import PreprocessConfig
from vidtriplane.config.presets import _names, search_dirs
from vidtriplane.config.render import PipelineConfig
from vidtriplane.paths import package_presets_dir

RENDER_PRESETS = ["render", "fast-cpu", "generated-tiny", "paste", "orbit"]
PREPROCESS_PRESETS = ["preprocess", "preprocess-matte", "preprocess-official"]


@pytest.mark.parametrize("name", sorted(_names("pipelines")))
def test_every_pipeline_resolves(name):
    cfg = resolve("render", pipeline=name)
    assert cfg.name == name and cfg.stages[-1] == "composite"


def test_presets_are_sorted_by_kind():
    assert set(RENDER_PRESETS) <= set(presets_of_kind("render"))
    assert set(PREPROCESS_PRESETS) <= set(presets_of_kind("preprocess"))
    assert not set(RENDER_PRESETS) & set(presets_of_kind("preprocess"))


@pytest.mark.parametrize("name", RENDER_PRESETS)
def test_every_render_preset_applies(name):
    assert isinstance(resolve("render", configs=[name]), PipelineConfig)


def test_preprocess_presets_apply_to_the_preprocess_kind():
    cfg = resolve("preprocess", configs=["preprocess-official"])
    assert isinstance(cfg, PreprocessConfig)
    assert cfg.align.official_rounding is True and cfg.smooth.mode == "off"


def test_a_preset_of_the_wrong_kind_is_named_with_what_was_expected():
    with pytest.raises(ConfigError, match=r"'preprocess'.* is a preprocess config.*expects a render config.*"
                                          r"render presets: .*generated-tiny"):
        resolve("render", configs=["preprocess"])
    with pytest.raises(ConfigError, match=r"is a render config.*expects a preprocess config"):
        resolve("preprocess", configs=["generated-tiny"])


def test_precedence_presets_files_flags_overrides(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("render: {depth_samples: 64, importance_samples: 32}\nruntime: {batch_size: 3}\n")
    cfg = resolve("render", pipeline="fast-cpu", configs=[own], flags={"runtime": {"batch_size": 5}},
                  overrides=["render.importance_samples=8"])
    assert cfg.render.depth_samples == 64  # file beats the pipeline's preset (48)
    assert cfg.runtime.batch_size == 5  # flag beats file
    assert cfg.render.importance_samples == 8  # --set beats everything
    assert cfg.composite.tile == 256  # from the fast-cpu preset
    assert load_pipeline("orbit")["composite"]["layout"] == "crop"  # a pipeline's own `set`


def test_user_presets_come_from_vidtriplane_home_and_shadow_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.yaml").write_text("kind: render\nrender: {depth_samples: 40}\n")
    (tmp_path / "configs" / "fast-cpu.yaml").write_text("render: {depth_samples: 24}\n")
    assert search_dirs("configs")[0] == tmp_path / "configs"
    assert resolve("render", configs=["mine"]).render.depth_samples == 40
    assert resolve("render", configs=["fast-cpu"]).render.depth_samples == 24
    assert "mine" in presets_of_kind("render")


def test_presets_never_come_from_a_configs_folder_beside_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "stray.yaml").write_text("render: {depth_samples: 40}\n")
    with pytest.raises(ConfigError, match="no preset named 'stray'"):
        resolve("render", configs=["stray"])
    assert package_presets_dir("configs").name == "configs"
    assert (package_presets_dir("configs").parent.name, package_presets_dir("configs").parent.parent.name) == \
        ("_presets", "vidtriplane")


def test_a_file_path_is_a_preset_too_and_a_missing_one_is_named(tmp_path):
    own = tmp_path / "x.yaml"
    own.write_text("kind: preprocess\nhold_frames: 3\n")
    assert resolve("preprocess", configs=[str(own)]).hold_frames == 3
    with pytest.raises(ConfigError, match="does not exist"):
        resolve("preprocess", configs=[str(tmp_path / "missing.yaml")])


def test_a_file_without_kind_whose_keys_fit_no_kind_is_refused(tmp_path):
    own = tmp_path / "x.yaml"
    own.write_text("hold_frames: 3\nrender: {depth_samples: 4}\n")
    with pytest.raises(ConfigError, match=r"keys \['hold_frames'\].*add `kind: ...`"):
        resolve("render", configs=[str(own)])


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
        (["render.depth_samples=[1, 2"], "not valid YAML"),
        (["render.depth_samples"], "key=value"),
    ],
)
def test_invalid_configs_say_why(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve("render", overrides=overrides)


def test_unknown_pipeline_lists_the_available_ones():
    with pytest.raises(ConfigError, match="aligned"):
        resolve("render", pipeline="nope")


def test_presets_command_shows_a_presets_whole_first_comment(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from vidtriplane.commands.presets import command

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.yaml").write_text(
        "# First line of the description, cut mid-sentence (no\n# flicker) by the line break.\n\n"
        "# a later comment\nkind: render\n")
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path))
    result = CliRunner().invoke(command, ["render"])
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if l.strip().startswith("mine "))
    assert line.split(None, 1)[1] == "First line of the description, cut mid-sentence (no flicker) by the line break."
