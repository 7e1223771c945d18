"""Fast tiny training configs for the tests: the train-tiny preset made smaller (batch 2, 6 + 6 depth samples,
deterministic sampling and algorithms, no validation or image grids unless asked)."""
from __future__ import annotations

from vidtriplane.config import resolve
from vidtriplane.config.train import TrainConfig

FAST = ["train.batch_size=2", "train.depth_samples=6", "train.importance_samples=6", "train.sampling=deterministic",
        "train.log_every=1", "train.val_batches=0", "train.image_every=100000", "train.save_every=100000",
        "data.synthetic_epoch=8", "data.workers=0", "runtime.deterministic=true", "runtime.device=cpu",
        "runtime.torch_threads=1"]


def tiny_config(*overrides: str) -> TrainConfig:
    """The train-tiny preset with :data:`FAST` and then ``overrides`` (``key=value`` strings) applied."""
    return resolve("train", configs=["train-tiny"], overrides=[*FAST, *overrides])


def set_flags(*overrides: str) -> list[str]:
    """:data:`FAST` + ``overrides`` as ``--set`` arguments of the CLI."""
    out: list[str] = []
    for item in (*FAST, *overrides):
        out += ["--set", item]
    return out
