"""What a training run writes besides checkpoints: ``metrics.jsonl``, ``val.jsonl``, image grids, TensorBoard.

* ``RUN_DIR/metrics.jsonl``: one JSON object per logged step: ``step`` (0-based index of the step, like
  the official ``global_step``), ``loss`` (the sum of the branch losses that were back-propagated),
  ``loss_psp`` / ``loss_triplane`` (null when the branch did not train) and every term, plus ``seconds``
  per step. A resumed run first drops the lines of steps it is about to redo.
* ``RUN_DIR/val.jsonl``: the averaged validation terms, one object per validation.
* ``RUN_DIR/images/step_NNNNNNN.png``: rows of input | first branch | final | novel view.
* TensorBoard event files in ``RUN_DIR/tensorboard`` when the ``tensorboard`` package is installed.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

log = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    """Appends metrics and writes image grids for rank 0 (construct it only there)."""

    def __init__(self, run_dir: Path, *, start_step: int) -> None:
        self.run_dir = Path(run_dir)
        self.metrics = self.run_dir / "metrics.jsonl"
        self.val = self.run_dir / "val.jsonl"
        for path in (self.metrics, self.val):
            truncate_after(path, start_step)
        self.board = _tensorboard(self.run_dir / "tensorboard")

    def step(self, step: int, values: Mapping[str, Optional[float]]) -> None:
        """One line of metrics.jsonl (and TensorBoard scalars)."""
        record = {"step": int(step), **{k: _clean(v) for k, v in values.items()}}
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._scalars("train", step, values)

    def validation(self, step: int, values: Mapping[str, float]) -> None:
        record = {"step": int(step), **{k: _clean(v) for k, v in values.items()}}
        with open(self.val, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._scalars("val", step, values)

    def images(self, step: int, columns: list[torch.Tensor]) -> Path:
        """Save a grid: one row per sample, one column per tensor ([B, 3, H, W] in [-1, 1])."""
        from PIL import Image

        grid = image_grid(columns)
        path = self.run_dir / "images" / f"step_{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)
        if self.board is not None:
            self.board.add_image("train/grid", grid, step, dataformats="HWC")
        return path

    def _scalars(self, prefix: str, step: int, values: Mapping[str, Optional[float]]) -> None:
        if self.board is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.board.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def truncate_after(path: Path, step: int) -> None:
    """Drop the lines of ``path`` whose ``step`` is >= ``step`` (steps a resumed run does again)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", -1) < step:
                kept.append(line)
        except ValueError:
            continue  # a line cut by a kill
    path.write_text("".join(f"{line}\n" for line in kept))


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def image_grid(columns: list[torch.Tensor]) -> np.ndarray:
    """uint8 [rows * H, columns * W, 3] from [B, 3, H, W] tensors in [-1, 1] (resized to the first's size)."""
    size = columns[0].shape[-2:]
    tiles = [torch.nn.functional.interpolate(c.detach().float().cpu(), size=size, mode="bilinear",
                                             align_corners=False) if c.shape[-2:] != size else c.detach().float().cpu()
             for c in columns]
    rows = torch.cat([torch.cat([t[i] for t in tiles], dim=-1) for i in range(tiles[0].shape[0])], dim=-2)
    return ((rows.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.debug("tensorboard is not installed: no event files (metrics.jsonl has every logged value)")
        return None
    return SummaryWriter(log_dir=str(folder))


__all__ = ["RunLog", "image_grid", "read_metrics", "truncate_after"]
