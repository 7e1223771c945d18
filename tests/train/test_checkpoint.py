"""Training checkpoints: the official keys, weights_only loading, the model description, atomic saves, RNG states."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import shared_path
from tests.train.tiny import tiny_config
from vidtriplane.checkpoints import load_triplanenet
from vidtriplane.config import from_mapping
from vidtriplane.config.train import TrainConfig
from vidtriplane.train import checkpoint as ck
from vidtriplane.train.loop import training_loop
from vidtriplane.train.networks import build_network
from vidtriplane.train.optim import Ranger

OFFICIAL_KEYS = {"state_dict", "opts", "best_val_loss", "step", "psp_optimizer", "triplane_optimizer"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = tiny_config("train.max_steps=2", "train.add_triplanenet=1", "train.save_every=2", "train.val_every=2",
                      "train.val_batches=1")
    training_loop(cfg, run_dir, progress=False)
    return cfg, run_dir


def test_official_keys_and_weights_only_loading(trained):
    cfg, run_dir = trained
    for name in (ck.LAST, ck.BEST):
        path = run_dir / "checkpoints" / name
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain containers and tensors only
        assert OFFICIAL_KEYS | {"latent_avg", "rng", "data", "identity"} == set(ckpt)
        assert ckpt["step"] == 2 and isinstance(ckpt["best_val_loss"], float)
        prefixes = {k.split(".", 1)[0] for k in ckpt["state_dict"]}
        assert prefixes == {"psp_encoder", "triplanenet_encoder", "decoder"}
        assert ckpt["state_dict"].keys() == build_network(cfg).state_dict().keys()
        assert ckpt["latent_avg"].shape == (10, 512)


def test_opts_hold_the_resolved_config_and_the_model(trained):
    cfg, run_dir = trained
    opts = ck.load(run_dir / "checkpoints" / ck.LAST)["opts"]
    sections = {k: opts[k] for k in ("model", "data", "loss", "optim", "train", "runtime")}
    yaml.safe_dump(sections)  # plain data
    assert from_mapping(TrainConfig, sections) == cfg
    assert opts["n_styles"] == 10 and opts["vidtriplane"]["version"] == 1
    assert opts["vidtriplane"]["model"]["eg3d"]["backbone_resolution"] == 64


def test_load_triplanenet_rebuilds_the_tiny_model_without_an_eg3d_file(trained):
    _, run_dir = trained
    path = run_dir / "checkpoints" / ck.BEST
    ckpt = ck.load(path)
    net = load_triplanenet(path)
    assert net.state_dict().keys() == ckpt["state_dict"].keys()
    assert all(torch.equal(v, ckpt["state_dict"][k]) for k, v in net.state_dict().items())
    assert torch.equal(net.latent_avg, ckpt["latent_avg"])
    assert ck.is_self_contained(path)


def test_optimiser_states_continue(trained):
    cfg, run_dir = trained
    ckpt = ck.load(run_dir / "checkpoints" / ck.LAST)
    net = build_network(cfg)
    opt = Ranger(net.triplanenet_encoder.parameters())
    opt.load_state_dict(ckpt["triplane_optimizer"])
    assert all(s["step"] == 1 for s in opt.state.values())  # the tri-plane branch trained one step


def test_resuming_another_model_is_refused(trained):
    cfg, run_dir = trained
    ckpt = ck.load(run_dir / "checkpoints" / ck.LAST)
    other = tiny_config("model.version=2")
    with pytest.raises(ck.ResumeError, match=r"another model \(version: checkpoint 1, config 2; variant"):
        ck.check_identity(ckpt, other, run_dir / "checkpoints" / ck.LAST)
    ck.check_identity(ckpt, cfg, run_dir)  # its own config is fine


def test_a_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ck.save(path, {"step": 1})

    def broken(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(KeyboardInterrupt):
        ck.save(path, {"step": 2})
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_rng_states_round_trip(tmp_path):
    state = ck.rng_state()
    ck.save(tmp_path / "rng.pt", {"rng": state})
    first = (torch.rand(3), np.random.rand(3), random.random())
    ck.set_rng_state(ck.load(tmp_path / "rng.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_full_size_v1_checkpoint_has_exactly_the_official_keys(tmp_path):
    manifest = json.loads(shared_path("spec", "official_state_dict_manifest.json").read_text())
    cfg = tiny_config("model.size=full", "model.eg3d=generated")
    net = build_network(cfg)
    state = ck.make_checkpoint(cfg=cfg, net=net, step=0, best_val_loss=None, psp_optimizer=Ranger(
        net.psp_encoder.parameters()), triplane_optimizer=Ranger(net.triplanenet_encoder.parameters()), rng=[], data={})
    expected = {f"{prefix}.{k}": shape for prefix, part in (("psp_encoder", "psp_encoder"),
                ("triplanenet_encoder", "triplanenet_encoder"), ("decoder", "eg3d_G")) for k, shape in manifest[part].items()}
    assert len(state["state_dict"]) == manifest["triplanenet_v1_full_state_dict"]["num_keys"] == 1182
    assert {k: list(v.shape) for k, v in state["state_dict"].items()} == {k: v["shape"] for k, v in expected.items()}
