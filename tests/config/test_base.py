from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from vidtriplane import config as C


@dataclass(frozen=True)
class Inner:
    samples: tuple[int, int] = (48, 48)
    mode: Literal["deterministic", "stochastic"] = "deterministic"


@dataclass(frozen=True)
class Outer:
    batch_size: int = 4
    scale: float = 1.0
    name: Optional[str] = None
    inner: Inner = field(default_factory=Inner)


def test_from_mapping_builds_nested_and_coerces():
    cfg = C.from_mapping(Outer, {"batch_size": 8, "scale": 2, "inner": {"samples": [96, 96]}})
    assert cfg == Outer(batch_size=8, scale=2.0, inner=Inner(samples=(96, 96)))
    assert isinstance(cfg.scale, float)


def test_unknown_key_is_named():
    with pytest.raises(C.ConfigError, match=r"inner\.sample\b.*valid keys"):
        C.from_mapping(Outer, {"inner": {"sample": 3}})


def test_wrong_type_is_named():
    with pytest.raises(C.ConfigError, match="batch_size: expected an integer"):
        C.from_mapping(Outer, {"batch_size": "four"})
    with pytest.raises(C.ConfigError, match="inner.mode"):
        C.from_mapping(Outer, {"inner": {"mode": "random"}})


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+400", "1e400", "nan", "1" + "0" * 400, "abc"])
def test_numbers_must_be_finite(value):
    """NaN and infinities never reach a model: YAML's .nan/.inf, an overflowing float, the same as YAML text
    (1e400, nan), an integer too large for a float, and text that is no number."""
    with pytest.raises(C.ConfigError, match="scale: expected a finite number"):
        C.apply_overrides(Outer(), [f"scale={value}"])


def test_exponents_without_a_dot_are_numbers():
    """YAML 1.1 reads 1e-4 as text; a number field takes it as the number it spells."""
    assert C.apply_overrides(Outer(), ["scale=1e-4"]).scale == 1e-4
    assert C.apply_overrides(Outer(), ["scale=2E+3"]).scale == 2000.0


def test_overrides_parse_yaml_values():
    cfg = C.apply_overrides(Outer(), ["inner.samples=[96, 96]", "name=run1", "scale=0.5"])
    assert cfg.inner.samples == (96, 96) and cfg.name == "run1" and cfg.scale == 0.5
    assert Outer().inner.samples == (48, 48)  # the original is untouched
    with pytest.raises(C.ConfigError, match="key=value"):
        C.apply_overrides(Outer(), ["batch_size"])


def test_dump_roundtrips(tmp_path):
    cfg = Outer(batch_size=2, name="x", inner=Inner(mode="stochastic"))
    path = tmp_path / "cfg.yaml"
    path.write_text(C.dump(cfg))
    assert C.from_mapping(Outer, C.load_yaml(path)) == cfg


def test_load_yaml_errors(tmp_path):
    with pytest.raises(C.ConfigError, match="does not exist"):
        C.load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(C.ConfigError, match="mapping"):
        C.load_yaml(bad)
