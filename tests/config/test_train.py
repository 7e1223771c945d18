"""LossConfig: the official weights, validation, and no heavy imports."""
from __future__ import annotations

import subprocess
import sys

import pytest

from vidtriplane.config.train import LossConfig


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
    code = "import sys, vidtriplane.config.train; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# --- TrainConfig / EvalConfig and their presets -------------------------------------------------------

from vidtriplane.config import ConfigError, resolve  # noqa: E402
from vidtriplane.config.train import TrainConfig  # noqa: E402


def test_the_v1_preset_is_the_official_recipe():
    cfg = resolve("train", configs=["train-v1"])
    assert isinstance(cfg, TrainConfig) and cfg.model.version == 1 and cfg.model.init == "ir-se50"
    t = cfg.train
    assert (t.batch_size, t.max_steps, t.stop_psp, t.add_triplanenet) == (4, 1_000_000, 500_000, 20_000)
    assert (cfg.optim.lr_psp, cfg.optim.lr_triplane, cfg.optim.betas, cfg.optim.k) == (1e-4, 1e-4, (0.95, 0.999), 6)
    assert cfg.loss == LossConfig.v1() and not cfg.gan


def test_the_v2_preset():
    cfg = resolve("train", configs=["train-v2"])
    assert cfg.model.version == 2 and cfg.loss.lpips_lambda_triplane == 0.8 and cfg.train.batch_size == 3
    assert cfg.train.max_steps == 1_500_000 and cfg.runtime.seed == 2107 and not cfg.gan
    assert resolve("train", configs=["train-v2"], overrides=["model.discriminator=random"]).gan


def test_the_tiny_preset_needs_no_weights():
    cfg = resolve("train", configs=["train-tiny"])
    assert (cfg.model.size, cfg.model.eg3d, cfg.model.init, cfg.loss.networks) == ("tiny", "generated", "none", "none")
    assert cfg.data.synthetic_ratio == 1.0


@pytest.mark.parametrize("override, message", [
    ("model.size=tiny", "model.size=tiny needs model.eg3d=generated"),
    ("train.add_triplanenet=600000", "must not exceed train.stop_psp"),
    ("model.discriminator=random", "model.discriminator is a TriPlaneNet v2 option"),
    ("data.synthetic_ratio=2", "data.synthetic_ratio must be in [0, 1]"),
    ("runtime.precision=fp16", "'fp16' is not one of ['fp32', 'bf16']"),
    ("optim.betas=[1.5, 0.9]", "optim.betas must be two values in [0, 1), got [1.5, 0.9]"),
    ("optim.lr_psp=.nan", "optim.lr_psp: expected a finite number, got nan"),
    ("loss.smooth_l1_beta=.inf", "loss.smooth_l1_beta: expected a finite number, got inf"),
])
def test_invalid_train_configs_say_why(override, message):
    with pytest.raises(ConfigError) as info:
        resolve("train", configs=["train-v1"], overrides=[override])
    assert message in str(info.value)


def test_the_evaluate_preset():
    cfg = resolve("evaluate", configs=["evaluate"])
    assert cfg.yaws == (-0.8, -0.6, -0.4, -0.2, 0.2, 0.4, 0.6, 0.8) and cfg.id_model == "curricularface"


def test_the_train_and_evaluate_configs_import_no_torch():
    code = ("import sys, vidtriplane.config.train, vidtriplane.config.evaluate, vidtriplane.commands.train, "
            "vidtriplane.commands.evaluate, vidtriplane.commands.export_mesh; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
