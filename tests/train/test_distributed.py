"""Data-parallel training: 2 gloo processes x batch 2 train the same parameters as 1 process x batch 4."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from tests.train.tiny import tiny_config
from vidtriplane.train.checkpoint import LAST, load
from vidtriplane.train.distributed import SyncBatchNorm2d, sync_batchnorm
from vidtriplane.train.loop import training_loop

# both branches and both phases of pSp (stop_psp at 3) in four steps; BatchNorm in training mode throughout
DDP_RUN = ["train.batch_size=4", "train.max_steps=4", "train.add_triplanenet=1", "train.stop_psp=3",
           "train.save_every=4", "data.synthetic_epoch=16"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    training_loop(tiny_config(*DDP_RUN), run_dir, progress=False)


@pytest.mark.slow  # two spawned processes: ~20-30 s on 2 CPU cores
def test_two_processes_train_like_one_with_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    training_loop(tiny_config(*DDP_RUN), tmp_path / "one", progress=False)
    ddp = load(tmp_path / "ddp" / "checkpoints" / LAST)
    one = load(tmp_path / "one" / "checkpoints" / LAST)
    assert ddp["step"] == one["step"] == 4 and ddp["data"]["world"] == 2 and len(ddp["rng"]) == 2
    init = tiny_config(*DDP_RUN)
    from vidtriplane.train.networks import build_network

    start = build_network(init).state_dict()
    moved = 0
    for key, value in one["state_dict"].items():
        other = ddp["state_dict"][key]
        assert torch.allclose(value.double(), other.double(), rtol=1e-4, atol=1e-5), key
        moved += int(not torch.equal(start[key], value))
    assert moved > 100  # the comparison is not between untrained networks
    # the BatchNorm statistics were computed over the whole batch of 4 in both runs
    key = "psp_encoder.input_layer.1.running_mean"
    assert not torch.equal(start[key], one["state_dict"][key])


def test_sync_batchnorm_without_a_group_is_batchnorm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    ref.load_state_dict(net.state_dict())
    sync_batchnorm(net)
    assert isinstance(net[1], SyncBatchNorm2d) and isinstance(net[2][0], SyncBatchNorm2d)
    assert net.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(net(x), ref(x))
    assert torch.equal(net[1].running_mean, ref[1].running_mean)
