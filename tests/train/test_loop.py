"""The training loop on the tiny model: learning, the branch schedule, exact resume, NaN stop, v2 + GAN, options."""
from __future__ import annotations

import math

import pytest
import torch

from tests.train.tiny import tiny_config
from vidtriplane.train import losses
from vidtriplane.train.checkpoint import LAST, load
from vidtriplane.train.logs import read_metrics
from vidtriplane.train.loop import TrainingDiverged, training_loop
from vidtriplane.train.networks import build_network


def run(tmp_path, *overrides, resume=False, name="run"):
    cfg = tiny_config(*overrides)
    training_loop(cfg, tmp_path / name, resume=resume, progress=False)
    return read_metrics(tmp_path / name / "metrics.jsonl")


def test_the_loss_falls(tmp_path):
    """Two fixed synthetic faces, pSp branch only: the mean of the last 10 logged steps is well below the first 10."""
    rows = run(tmp_path, "train.max_steps=20", "train.batch_size=2", "data.synthetic_epoch=2",
               "data.synthetic_refresh=false", "train.add_triplanenet=20", "train.stop_psp=20")
    losses_ = [r["loss"] for r in rows]
    assert len(losses_) == 20 and all(r["loss_triplane"] is None for r in rows)
    first, last = sum(losses_[:10]) / 10, sum(losses_[-10:]) / 10
    assert last < 0.8 * first, losses_


def test_the_branch_schedule(tmp_path):
    rows = run(tmp_path, "train.max_steps=4", "train.add_triplanenet=2", "train.stop_psp=3")
    assert [r["loss_psp"] is not None for r in rows] == [True, True, True, False]
    assert [r["loss_triplane"] is not None for r in rows] == [False, False, True, True]
    assert all(r["loss"] == pytest.approx((r["loss_psp"] or 0) + (r["loss_triplane"] or 0)) for r in rows)
    assert rows[0]["skipped_loss_lpips_psp"] == 0.8  # loss.networks=none: the skipped terms are reported


def _changed(cfg, state, prefix):
    fresh = build_network(cfg).state_dict()
    return any(not torch.equal(fresh[k], v) for k, v in state.items() if k.startswith(prefix))


def test_a_branch_outside_its_phase_is_not_updated(tmp_path):
    overrides = ["train.max_steps=2", "train.save_every=2"]
    run(tmp_path, *overrides, "train.add_triplanenet=2", "train.stop_psp=2", name="psp")
    cfg = tiny_config(*overrides, "train.add_triplanenet=2", "train.stop_psp=2")
    state = load(tmp_path / "psp" / "checkpoints" / LAST)["state_dict"]
    assert _changed(cfg, state, "psp_encoder.") and not _changed(cfg, state, "triplanenet_encoder.")
    assert not _changed(cfg, state, "decoder.")
    run(tmp_path, *overrides, "train.add_triplanenet=0", "train.stop_psp=0", name="tri")
    state = load(tmp_path / "tri" / "checkpoints" / LAST)["state_dict"]
    assert not _changed(cfg, state, "psp_encoder.") and _changed(cfg, state, "triplanenet_encoder.")


@pytest.mark.slow  # 14 steps in three runs: ~15-25 s on 2 CPU cores
def test_a_resumed_run_repeats_the_uninterrupted_one_bitwise(tmp_path):
    common = ["train.add_triplanenet=3", "train.sampling=stochastic", "data.synthetic_epoch=6", "train.val_every=3",
              "train.val_batches=1", "train.image_every=3"]
    straight = run(tmp_path, *common, "train.max_steps=7", name="straight")
    run(tmp_path, *common, "train.max_steps=5", name="split")
    resumed = run(tmp_path, *common, "train.max_steps=7", name="split", resume=True)
    keys = [k for k in straight[0] if k != "seconds"]
    assert [r["step"] for r in resumed] == list(range(7))
    for a, b in zip(straight, resumed):
        assert {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}  # exact floats
    assert {k for r in straight for k in r} == {k for r in resumed for k in r}
    assert load(tmp_path / "split" / "checkpoints" / LAST)["step"] == 7


def test_a_non_finite_loss_stops_with_the_step_and_terms(tmp_path, monkeypatch):
    real, calls = losses.psp_loss, []

    def poisoned(*args, **kwargs):
        total, terms = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            return total * float("nan"), {**terms, "loss_psp": math.nan, "loss_l2_psp": math.nan}
        return total, terms

    monkeypatch.setattr(losses, "psp_loss", poisoned)
    with pytest.raises(TrainingDiverged) as info:
        run(tmp_path, "train.max_steps=6", "train.save_every=1")
    text = str(info.value)
    assert text.startswith("step 2: the loss is not finite (loss_l2_psp, loss_psp)")
    assert "loss_l2_psp=nan" in text and str(tmp_path / "run" / "checkpoints" / LAST) in text
    last = load(tmp_path / "run" / "checkpoints" / LAST)
    assert last["step"] == 2 and all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_v2_with_mirror_and_gan_terms(tmp_path):
    rows = run(tmp_path, "model.version=2", "model.variant=pixelshuffle", "model.discriminator=random",
               "train.max_steps=3", "train.add_triplanenet=1", "train.add_discriminator=1", "loss.r1_every=2",
               "train.save_every=3")
    assert "loss_psp_mirror" in rows[0] and "loss_psp_total" in rows[0] and "loss_D" not in rows[0]
    assert {"loss_triplane_mirror", "loss_G_adv", "loss_D"} <= set(rows[1]) and "loss_D_r1_reg" not in rows[1]
    assert "loss_D_r1_reg" in rows[2]  # lazy R1 on even steps
    assert rows[1]["loss"] == pytest.approx(rows[1]["loss_psp_total"] + rows[1]["loss_triplane_total"])
    ckpt = load(tmp_path / "run" / "checkpoints" / LAST)
    assert "dis_state_dict" in ckpt and ckpt["opts"]["use_pixelshuffle"] is True
    assert ckpt["dis_optimizer"]["state"]


def test_bf16_and_gradient_checkpointing_train(tmp_path):
    rows = run(tmp_path, "runtime.precision=bf16", "runtime.gradient_checkpointing=true", "train.max_steps=2",
               "train.add_triplanenet=1")
    assert all(math.isfinite(r["loss"]) for r in rows) and rows[1]["loss_triplane"] is not None


def test_gradient_checkpointing_gives_the_same_gradients_and_statistics():
    from vidtriplane.train.networks import enable_gradient_checkpointing

    cfg = tiny_config()
    nets = [build_network(cfg).psp_encoder.train() for _ in range(2)]
    assert enable_gradient_checkpointing(nets[1]) == len(nets[1].body)
    x = torch.randn(2, 3, 64, 64)
    for net in nets:
        net(x).square().mean().backward()
    (a, b) = [dict(n.named_parameters()) for n in nets]
    assert all(torch.allclose(a[k].grad, b[k].grad, atol=1e-6) for k in a)
    sa, sb = nets[0].state_dict(), nets[1].state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # BN counted the batch once


def test_v2_on_a_dataset_folder_with_workers_mirror_copies_and_a_validation_folder(tmp_path):
    import numpy as np

    from tests.train.test_data import make_dataset

    data = tmp_path / "data"
    make_dataset(data, n=4, size=128)
    (data / "conf_map").mkdir()
    np.save(data / "conf_map" / "000001.npy", np.ones((256, 256), np.float32))
    rows = run(tmp_path, "model.version=2", f"data.dataset={data}", f"data.val_dataset={data}", "data.mirror=true",
               "data.synthetic_ratio=0.5", "data.workers=1", "train.max_steps=2", "train.add_triplanenet=1",
               "train.val_every=2", "train.val_batches=1")
    assert [r["step"] for r in rows] == [0, 1] and rows[1]["loss_l1_triplane_mirror"] is not None
    val = read_metrics(tmp_path / "run" / "val.jsonl")
    assert len(val) == 1 and val[0]["step"] == 1 and "loss_triplane" in val[0]
    ckpt = load(tmp_path / "run" / "checkpoints" / LAST)
    assert ckpt["data"]["samples"] == 16  # 4 images + 4 mirror copies + as many synthetic samples
