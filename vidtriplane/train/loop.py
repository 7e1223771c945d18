"""The TriPlaneNet training loop: one plain function (``training_loop``), like edm2's.

Per step (``tpn:training/coach.py``, ``tpn:training/coach_v2.py``):
the batch's synthetic rows are rendered by the frozen generator; the pSp branch trains on steps
< ``train.stop_psp`` (afterwards it runs in eval mode without gradients), the tri-plane branch on steps
>= ``train.add_triplanenet`` from detached inputs; each branch has its own Ranger. v2 adds the mirror
terms and, with a discriminator, the non-saturating GAN step of the tri-plane branch, the discriminator's
logistic loss (Adam) and its lazy R1 penalty every ``loss.r1_every`` steps from ``train.add_discriminator``.

Step ``i`` (0-based, the official ``global_step``) is logged as ``step: i``; checkpoints store the number
of completed steps. Validation, image grids and checkpoints run outside the training RNG streams
(``fork_rng``), so a run stopped at step N and resumed follows the uninterrupted run exactly (bitwise
with ``runtime.deterministic``). A non-finite loss stops the run before the update, naming the step and
the terms; the last checkpoint on disk stays the last good one.
"""
from __future__ import annotations

import logging
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

from vidtriplane.config.base import dump
from vidtriplane.config.train import TrainConfig
from vidtriplane.errors import UsageError, VidtriplaneError
from vidtriplane.train import checkpoint as ckpt_io
from vidtriplane.train import data as data_mod
from vidtriplane.train import losses
from vidtriplane.train import step as steps
from vidtriplane.train.distributed import (Processes, average_gradients, barrier, broadcast_state, close_processes,
                                           init_processes, mean_over_processes, sync_batchnorm)
from vidtriplane.train.logs import RunLog
from vidtriplane.train.networks import (build_discriminator, build_loss_nets, build_network,
                                        enable_gradient_checkpointing)
from vidtriplane.train.optim import Ranger

log = logging.getLogger(__name__)


class TrainingDiverged(VidtriplaneError):
    """A loss became NaN or infinite; the message names the step, the terms and the last good checkpoint."""


def pick_device(name: str) -> torch.device:
    """auto -> cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"runtime.device={name}: CUDA is not available on this machine; use cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def _gather_rng(procs: Processes) -> list[dict]:
    state = ckpt_io.rng_state()
    if not procs.distributed:
        return [state]
    states: list[Any] = [None] * procs.world
    dist.all_gather_object(states, state)
    return states


def _check_finite(step: int, terms: dict[str, float], run_dir: Path) -> None:
    bad = {k: v for k, v in terms.items() if not np.isfinite(v)}
    if not bad:
        return
    last = ckpt_io.checkpoint_dir(run_dir) / ckpt_io.LAST
    where = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
    shown = ", ".join(f"{k}={v:.6g}" for k, v in terms.items())
    raise TrainingDiverged(f"step {step}: the loss is not finite ({', '.join(bad)}); terms: {shown}. Training "
                           f"stopped before this update; {where}. Lower optim.lr_* or check the data.")


def training_loop(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume, from ``RUN_DIR/checkpoints/last.pt``) a TriPlaneNet; returns a summary dict."""
    run_dir = Path(run_dir)
    device = pick_device(cfg.runtime.device)
    procs = init_processes(device)
    try:
        return _train(cfg, run_dir, device, procs, resume=resume, progress=progress)
    finally:
        close_processes(procs)


def _train(cfg: TrainConfig, run_dir: Path, device: torch.device, procs: Processes, *, resume: bool,
           progress: bool) -> dict:
    t, rt = cfg.train, cfg.runtime
    # 1. process settings
    if t.batch_size % procs.world:
        raise UsageError(f"train.batch_size={t.batch_size} does not split over {procs.world} processes")
    local_batch = t.batch_size // procs.world
    if rt.torch_threads:
        torch.set_num_threads(rt.torch_threads)
    if rt.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(rt.seed + procs.rank)
    np.random.seed((rt.seed + procs.rank) % 2**32)
    random.seed(rt.seed + procs.rank)

    # 2. the data folders, checked before anything is built
    if cfg.data.synthetic_ratio < 1 and not cfg.data.dataset:
        raise data_mod.DataError("data.dataset is empty: give the folder of aligned crops + dataset.json "
                                 "(vidtriplane preprocess), or set data.synthetic_ratio=1 for synthetic samples only")
    images = data_mod.scan_dataset(cfg.data.dataset) if cfg.data.synthetic_ratio < 1 else None
    if images is None and cfg.data.dataset:
        log.info("data.synthetic_ratio=1: data.dataset is not used (synthetic samples only)")
    if images is not None and cfg.model.version == 2:
        images = data_mod.with_conf_maps(images, cfg.data.conf_maps)
    val_images = None
    if procs.main and t.val_batches and cfg.data.val_dataset:
        val_images = data_mod.scan_dataset(cfg.data.val_dataset, what="data.val_dataset")
        if cfg.model.version == 2:
            val_images = data_mod.with_conf_maps(val_images)

    # 3. networks and optimisers
    net = build_network(cfg).to(device)
    loss_nets = build_loss_nets(cfg, device)
    gen_cfg = net.decoder.cfg
    input_size = net.config.psp.input_size
    D = build_discriminator(cfg, gen_cfg.img_resolution)
    if D is not None:
        D = D.to(device)
    if procs.distributed:
        for module in (net.psp_encoder, net.triplanenet_encoder):
            sync_batchnorm(module)
            broadcast_state(module, procs)
        if D is not None:
            broadcast_state(D, procs)
    if rt.gradient_checkpointing:
        units = enable_gradient_checkpointing(net.psp_encoder, net.triplanenet_encoder)
        log.info("gradient checkpointing: %d encoder units recompute their activations in the backward pass", units)
    o = cfg.optim
    ranger = dict(alpha=o.alpha, k=o.k, n_sma_threshold=o.n_sma_threshold, betas=o.betas, eps=o.eps,
                  weight_decay=o.weight_decay)
    opt_psp = Ranger(net.psp_encoder.parameters(), lr=o.lr_psp, **ranger)
    opt_tri = Ranger(net.triplanenet_encoder.parameters(), lr=o.lr_triplane, **ranger)
    opt_d = torch.optim.Adam(D.parameters(), lr=o.lr_discriminator) if D is not None else None

    # 4. samples: real ones read by the workers, synthetic ones rendered here
    image_size = gen_cfg.img_resolution if D is not None else input_size
    common = dict(image_size=image_size, conf_size=input_size, z_dim=gen_cfg.z_dim, seed=rt.seed,
                  camera=cfg.data.camera)
    real = 0 if images is None else len(images) * (2 if cfg.data.mirror else 1)
    dataset = data_mod.TrainSamples(images, synthetic=data_mod.synthetic_count(
        real, cfg.data.synthetic_ratio, cfg.data.synthetic_epoch), mirror=cfg.data.mirror,
        refresh=cfg.data.synthetic_refresh, **common)
    sampler = data_mod.EpochSampler(len(dataset), world=procs.world, rank=procs.rank, seed=rt.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=local_batch, sampler=sampler, drop_last=True,
                                         num_workers=cfg.data.workers, persistent_workers=cfg.data.workers > 0,
                                         worker_init_fn=data_mod.worker_init, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(rt.seed))  # not the global RNG
    val_keys, val_set = [], None
    if procs.main and t.val_batches:
        n_val = t.val_batches * t.batch_size
        if val_images is not None:
            val_set = data_mod.TrainSamples(val_images, synthetic=0, **common)
            val_keys = [(0, i) for i in range(min(n_val, len(val_set)))]
        else:
            val_set = data_mod.TrainSamples(None, synthetic=n_val, **common)
            val_keys = [(data_mod.VALIDATION_EPOCH, i) for i in range(n_val)]
    camera_pool = torch.from_numpy(images.labels) if images is not None else None

    # 5. resume
    start, best = 0, None
    ckpt_dir = ckpt_io.checkpoint_dir(run_dir)
    if resume:
        path = ckpt_dir / ckpt_io.LAST
        state = ckpt_io.load(path)
        ckpt_io.check_identity(state, cfg, path)
        net.load_state_dict(state["state_dict"])
        opt_psp.load_state_dict(state["psp_optimizer"])
        opt_tri.load_state_dict(state["triplane_optimizer"])
        if D is not None and "dis_state_dict" in state:
            D.load_state_dict(state["dis_state_dict"])
            opt_d.load_state_dict(state["dis_optimizer"])
        start, best = int(state["step"]), state.get("best_val_loss")
        rngs = state.get("rng") or []
        if len(rngs) == procs.world:
            ckpt_io.set_rng_state(rngs[procs.rank])
        else:
            log.warning("%s was written by %d process(es), this run has %d: the random streams restart from the "
                        "seed (the data order is kept)", path, len(rngs), procs.world)
        stored = state.get("data", {})
        if stored.get("samples") not in (None, len(dataset)):
            log.warning("the training set had %s samples per epoch and now has %d: the data order differs from "
                        "the interrupted run", stored.get("samples"), len(dataset))
        log.info("resuming %s at step %d (best validation loss %s)", run_dir, start, best)
    if procs.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump(cfg))
    if start >= t.max_steps:
        log.info("the run is already at step %d of train.max_steps=%d; nothing to do", start, t.max_steps)
        return {"steps": start, "best_val_loss": best, "last": str(ckpt_dir / ckpt_io.LAST)}

    # 6. the loop
    runlog = RunLog(run_dir, start_step=start) if procs.main else None
    kw = steps.render_kwargs(cfg)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if rt.precision == "bf16" else nullcontext())
    version = cfg.model.version
    stream = data_mod.batch_stream(loader, sampler, start_step=start, batch_size=local_batch)
    per_epoch = sampler.share() // local_batch

    def save(path: Path, step_count: int, rngs: list[dict]) -> None:
        state = ckpt_io.make_checkpoint(
            cfg=cfg, net=net, step=step_count, best_val_loss=best, psp_optimizer=opt_psp,
            triplane_optimizer=opt_tri, rng=rngs, discriminator=D, dis_optimizer=opt_d,
            data={"epoch": step_count // per_epoch, "batch": step_count % per_epoch, "samples": len(dataset),
                  "world": procs.world, "batch_size": t.batch_size})
        ckpt_io.save(path, state)

    def train_modes() -> None:
        """Encoders in training mode (the loop sets each branch per step), the generator always in eval mode."""
        net.train()
        net.decoder.eval()

    def validate(step: int) -> Optional[float]:
        """Average validation terms (eval mode, no gradients); the loss best.pt follows."""
        if not val_keys:
            return None
        net.eval()
        totals: dict[str, list[float]] = {}
        with torch.no_grad():
            for i in range(0, len(val_keys), t.batch_size):
                items = [val_set[k] for k in val_keys[i:i + t.batch_size]]
                batch = torch.utils.data.default_collate(items)
                inp = steps.prepare(batch, net.decoder, cfg, input_size=input_size, device=device, full=False)
                with autocast:
                    first = steps.first_branch(net, inp, kw, version=version)
                    terms = steps.psp_objective(first, inp, loss_nets, cfg)[1] if step < t.stop_psp else {}
                    if step >= t.add_triplanenet:
                        second = steps.second_branch(net, inp, first, kw, version=version)
                        terms.update(steps.triplane_objective(second, inp, loss_nets, cfg)[1])
                for k, v in terms.items():
                    totals.setdefault(k, []).append(v)
        train_modes()
        mean = {k: float(np.mean(v)) for k, v in totals.items()}
        runlog.validation(step, mean)
        return mean.get("loss_triplane", mean.get("loss_psp"))

    def update(step: int, result: tuple[torch.Tensor, dict], optimizer, module) -> dict[str, float]:
        """Check the (process-averaged) terms, back-propagate, average the gradients, step; returns the terms."""
        loss, terms = result
        terms = mean_over_processes(terms, procs, device)
        _check_finite(step, terms, run_dir)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(module.parameters(), procs)
        optimizer.step()
        return terms

    from tqdm import tqdm

    bar = tqdm(total=t.max_steps, initial=start, unit="step", file=sys.stderr, dynamic_ncols=True,
               disable=not (progress and procs.main))
    train_modes()
    for step in range(start, t.max_steps):
        t0 = time.perf_counter()
        inp = steps.prepare(next(stream), net.decoder, cfg, input_size=input_size, device=device,
                            full=D is not None)
        train_psp, train_tri = step < t.stop_psp, step >= t.add_triplanenet
        values: dict[str, Optional[float]] = {"loss_psp": None, "loss_triplane": None}
        total = 0.0

        # 6a. first branch: pSp through the frozen generator
        net.psp_encoder.train(train_psp).requires_grad_(train_psp)
        with torch.set_grad_enabled(train_psp), autocast:
            first = steps.first_branch(net, inp, kw, version=version)
        if train_psp:
            terms = update(step, steps.psp_objective(first, inp, loss_nets, cfg), opt_psp, net.psp_encoder)
            values.update(terms)
            total += steps.branch_total(terms, "psp")

        # 6b. second branch: tri-plane encoder on detached inputs
        net.triplanenet_encoder.train(train_tri).requires_grad_(train_tri)
        if train_tri:
            with autocast:
                second = steps.second_branch(net, inp, first, kw, version=version)
            terms = update(step, steps.triplane_objective(second, inp, loss_nets, cfg), opt_tri, net.triplanenet_encoder)
            values.update(terms)
            total += steps.branch_total(terms, "triplane")

            # 6c. v2 GAN: generator step of the tri-plane branch, discriminator step, lazy R1 every r1_every steps
            if D is not None and step >= t.add_discriminator:
                camera = steps.adversarial_camera(inp, cfg, camera_pool)
                with autocast:
                    fake = steps.adversarial_fake(net, inp, first, camera, kw, version=version).float()
                D.requires_grad_(False)
                values.update(update(step, losses.generator_adv_loss(D, fake, cfg.loss), opt_tri,
                                     net.triplanenet_encoder))
                D.requires_grad_(True)
                values.update(update(step, losses.discriminator_loss(D, inp.x_full, fake), opt_d, D))
                if losses.r1_due(step, cfg.loss):
                    values.update(update(step, losses.r1_penalty(D, inp.x_full, cfg.loss), opt_d, D))
                D.requires_grad_(False)
        net.triplanenet_encoder.requires_grad_(False)
        values["loss"] = total
        done = step + 1
        last_step = done == t.max_steps

        # 6d. logs, image grids, validation, checkpoints (outside the training RNG streams)
        if procs.main and (step % t.log_every == 0 or last_step):
            runlog.step(step, {**values, "seconds": time.perf_counter() - t0})
            bar.set_postfix(loss=f"{total:.4f}", refresh=False)
        bar.update(1)
        do_val = done % t.val_every == 0 or last_step
        do_save = done % t.save_every == 0 or last_step
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if procs.main and step % t.image_every == 0:
                net.eval()
                runlog.images(step, steps.preview(net, inp, yaw=t.novel_yaw, **kw))
                train_modes()
            val_loss = validate(step) if procs.main and do_val else None
        rngs = _gather_rng(procs) if (do_val or do_save) else []
        if procs.main:
            if val_loss is not None and np.isfinite(val_loss) and (best is None or val_loss < best):
                best = float(val_loss)
                save(ckpt_dir / ckpt_io.BEST, done, rngs)
                log.info("step %d: validation loss %.5f, the best so far -> %s", step, best, ckpt_dir / ckpt_io.BEST)
            if do_save:
                save(ckpt_dir / ckpt_io.LAST, done, rngs)
        if do_val or do_save:
            barrier(procs)
    bar.close()
    if runlog is not None:
        runlog.close()
    return {"steps": t.max_steps, "best_val_loss": best, "last": str(ckpt_dir / ckpt_io.LAST),
            "best": str(ckpt_dir / ckpt_io.BEST)}


__all__ = ["TrainingDiverged", "pick_device", "training_loop"]
