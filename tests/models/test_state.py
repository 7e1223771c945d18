"""Strict state_dict checking: one clear error naming missing/unexpected keys and shape mismatches."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vidtriplane.models.state import StateDictMismatch, check_state_dict, load_strict


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_exact_state_dict_passes_and_loads_values():
    src, dst = _model(), _model()
    load_strict(dst, src.state_dict(), what="toy")
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def test_missing_unexpected_and_shape_errors_name_the_keys():
    m = _model()
    sd = dict(m.state_dict())
    del sd["2.bias"]
    sd["9.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(5, 3)
    with pytest.raises(StateDictMismatch) as info:
        check_state_dict(m, sd, what="toy model")
    msg = str(info.value)
    assert msg.startswith("toy model:")
    assert "1 missing key: 2.bias" in msg
    assert "1 unexpected key: 9.weight" in msg
    assert "0.weight (checkpoint [5, 3] vs model [4, 3])" in msg
    assert isinstance(info.value, ValueError)
    assert info.value.missing == ["2.bias"] and info.value.unexpected == ["9.weight"]
    assert info.value.mismatched == [("0.weight", (5, 3), (4, 3))]


def test_many_keys_are_counted_and_a_prefix_is_diagnosed():
    m = nn.Sequential(*[nn.Linear(2, 2) for _ in range(4)])
    before = {k: v.clone() for k, v in m.state_dict().items()}
    other = nn.Sequential(*[nn.Linear(2, 2) for _ in range(4)])
    sd = {"decoder." + k: v for k, v in other.state_dict().items()}
    with pytest.raises(StateDictMismatch) as info:
        load_strict(m, sd, what="G")
    msg = str(info.value)
    assert "8 missing keys" in msg and "8 unexpected keys" in msg
    assert "(3 more)" in msg
    assert "extra prefix 'decoder.'" in msg
    # nothing was loaded
    assert all(torch.equal(m.state_dict()[k], v) for k, v in before.items())


def test_the_same_check_works_on_plain_shape_maps():
    """``diff_shapes`` is what check_state_dict and the registry's structure checks share."""
    from vidtriplane.errors import VidtriplaneError
    from vidtriplane.models.state import check_shapes, diff_shapes, shapes_of

    found = {"a": (1,), "b": (2, 3), "x": (1,)}
    expected = {"a": (1,), "b": (3, 2), "c": (4,)}
    diff = diff_shapes(found, expected)
    assert (diff.missing, diff.unexpected, diff.mismatched) == (["c"], ["x"], [("b", (2, 3), (3, 2))])
    assert diff.describe() == ["1 missing key: c", "1 unexpected key: x",
                               "1 shape mismatch: b (checkpoint [2, 3] vs model [3, 2])"]
    assert not diff.ok and diff_shapes(expected, expected).ok and diff_shapes(expected, expected).describe() == []
    with pytest.raises(StateDictMismatch) as info:
        check_shapes(found, expected, what="maps")
    assert str(info.value) == ("maps: the weights do not fit the model; " + "; ".join(diff.describe())
                               + ". Check that the weight file is the one for this model and configuration.")
    assert isinstance(info.value, VidtriplaneError) and info.value.exit_code == 1
    m = _model()
    assert shapes_of(m.state_dict()) == {"0.weight": (4, 3), "0.bias": (4,), "2.weight": (2, 4), "2.bias": (2,)}
