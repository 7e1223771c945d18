"""LossConfig: the official weights, validation, and no heavy imports."""
from __future__ import annotations

import subprocess
import sys

import pytest

from vidtriplane.train.config import LossConfig


def test_v1_and_v2_weights():
    v1, v2 = LossConfig.v1(), LossConfig.v2()
    assert (v1.l2_lambda_psp, v1.lpips_lambda_psp, v1.id_lambda_psp) == (1.0, 0.8, 0.1)
    assert (v1.l1_lambda_triplane, v1.lpips_lambda_triplane, v1.id_lambda_triplane) == (1.0, 0.1, 0.1)
    assert v2.lpips_lambda_triplane == 0.8 and v2.replace(lpips_lambda_triplane=0.1) == v1
    assert (v2.mirror_lambda, v2.conf_eps, v2.adv_lambda, v2.r1_gamma, v2.r1_every) == (0.1, 1.0, 0.005, 10.0, 16)


def test_validation():
    with pytest.raises(ValueError, match="id_lambda_psp"):
        LossConfig(id_lambda_psp=-1)
    with pytest.raises(ValueError, match="r1_every"):
        LossConfig(r1_every=0)
    with pytest.raises(ValueError, match="conf_eps"):
        LossConfig(conf_eps=0)


def test_importing_the_config_does_not_import_torch():
    code = "import sys, vidtriplane.train.config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
