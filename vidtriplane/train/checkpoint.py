"""Training checkpoints in the official TriPlaneNet format, plus what an exact resume needs.

``RUN_DIR/checkpoints/last.pt`` (every ``train.save_every`` steps and at the end) and ``best.pt`` (lowest
validation loss) hold the official keys (``tpn:training/coach.py: __get_save_dict``; ``dis_state_dict``
and ``dis_optimizer`` from ``tpn:training/coach_v2.py``):

* ``state_dict``: ``net.state_dict()`` with the official names (psp_encoder.*, triplanenet_encoder.*, decoder.*);
* ``opts``: the resolved config as plain dicts, the official ``n_styles`` (and v2 ``use_pixelshuffle``), and
  ``opts["vidtriplane"]``: the model description (``format``, ``version``, ``variant``, ``model`` = the
  :class:`TriPlaneNetConfig` as a mapping, ``latent_avg``) from which ``load_triplanenet`` rebuilds any
  size of model without an EG3D file;
* ``latent_avg`` [num_ws, w_dim], ``step`` (steps completed; the official code stores the index of the
  last step, which its resume repeats), ``best_val_loss``, ``psp_optimizer``, ``triplane_optimizer``;
* ours: ``rng`` (torch/CUDA/numpy/python states of every process), ``data`` (epoch position), and for
  the v2 GAN ``dis_state_dict`` + ``dis_optimizer``.

Everything is tensors and plain containers: the files load with ``torch.load(weights_only=True)``.
Files are written to a temporary name in the same folder and renamed, so a kill during a save never
leaves a broken checkpoint.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from vidtriplane.config.base import to_mapping
from vidtriplane.config.train import TrainConfig
from vidtriplane.errors import UsageError

FORMAT = 1
LAST, BEST = "last.pt", "best.pt"


class ResumeError(UsageError):
    """A run folder that cannot be resumed with the given config; the message says why."""


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


# ---------------------------------------------------------------------------------------------------
# RNG states (plain tensors and numbers)


def rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, numpy and python RNG states."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64)},
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), None))


# ---------------------------------------------------------------------------------------------------
# Contents


def model_description(net: torch.nn.Module, version: int) -> dict[str, Any]:
    """``opts["vidtriplane"]``: what ``vidtriplane.checkpoints.load_triplanenet`` rebuilds the model from."""
    return {"format": FORMAT, "version": version, "variant": net.config.encoder.variant,
            "model": to_mapping(net.config), "latent_avg": net.average_latent().detach().cpu().clone()}


def make_opts(cfg: TrainConfig, net: torch.nn.Module) -> dict[str, Any]:
    """The checkpoint's ``opts``: the resolved config, official names the official scripts read, our description."""
    opts: dict[str, Any] = to_mapping(cfg)
    opts["n_styles"] = net.config.psp.n_styles
    if cfg.model.version == 2:
        opts["use_pixelshuffle"] = net.config.encoder.variant == "pixelshuffle"
    opts["vidtriplane"] = model_description(net, cfg.model.version)
    return opts


def make_checkpoint(*, cfg: TrainConfig, net: torch.nn.Module, step: int, best_val_loss: Optional[float],
                    psp_optimizer, triplane_optimizer, rng: list[dict], data: dict,
                    discriminator=None, dis_optimizer=None) -> dict[str, Any]:
    """The dict :func:`save` writes (see the module docstring)."""
    ckpt: dict[str, Any] = {
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "opts": make_opts(cfg, net),
        "latent_avg": net.average_latent().detach().cpu().clone(),
        "step": int(step),
        "best_val_loss": None if best_val_loss is None else float(best_val_loss),
        "psp_optimizer": psp_optimizer.state_dict(),
        "triplane_optimizer": triplane_optimizer.state_dict(),
        "rng": rng,
        "data": dict(data),
        "identity": cfg.model_identity,
    }
    if discriminator is not None:
        ckpt["dis_state_dict"] = {k: v.detach().cpu() for k, v in discriminator.state_dict().items()}
        ckpt["dis_optimizer"] = dis_optimizer.state_dict()
    return ckpt


def save(path: Path, ckpt: Mapping[str, Any]) -> Path:
    """Write atomically: a temporary file in the same folder, flushed to disk, then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(ckpt), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: Path) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True`` (the project's one reader)."""
    from vidtriplane.checkpoints import read_torch_file

    return read_torch_file(path, kind="training checkpoint")


def is_self_contained(path: str | Path) -> bool:
    """Whether ``path`` is a ``vidtriplane train`` checkpoint that describes its model and holds latent_avg
    (so rendering it needs no EG3D file). Cheap: the file is memory-mapped, not read. False when unreadable."""
    from vidtriplane.weights.loader import load_torch

    try:
        obj = load_torch(Path(path), kind="training checkpoint")
        desc = obj.get("opts", {}).get("vidtriplane") if isinstance(obj, Mapping) else None
    except Exception:  # noqa: BLE001 - unreadable files are reported by the loader itself
        return False
    return isinstance(desc, Mapping) and isinstance(desc.get("latent_avg"), torch.Tensor)


def check_identity(ckpt: Mapping[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume a checkpoint of another model (version, size, v2 variant, generator)."""
    stored = ckpt.get("identity")
    if stored is None:
        raise ResumeError(f"{path} was not written by `vidtriplane train` (no model identity); start a new run "
                          "folder, or load it for rendering with --weights")
    wanted = cfg.model_identity
    diff = [f"{k}: checkpoint {stored.get(k)!r}, config {wanted[k]!r}" for k in wanted if stored.get(k) != wanted[k]]
    if diff:
        raise ResumeError(f"cannot resume {path}: it holds another model ({'; '.join(diff)}). Resume with the run's "
                          "own config (vidtriplane train --resume RUN_DIR) or train into a new folder.")


__all__ = ["BEST", "FORMAT", "LAST", "ResumeError", "check_identity", "checkpoint_dir", "is_self_contained", "load",
           "make_checkpoint", "make_opts", "model_description", "rng_state", "save", "set_rng_state"]
