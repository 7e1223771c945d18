"""Training data: aligned crops + ``dataset.json``, mixed with EG3D samples synthesised on the fly.

A dataset folder is what ``vidtriplane preprocess`` (and the official preprocessing) writes: aligned 512
crops and ``dataset.json`` = ``{"labels": [[file name, [25 floats]], ...]}``; v2 may add unsup3d
confidence maps ``conf_map/NAME.npy`` (``tpn:datasets/dataset_v2.py``). :func:`scan_dataset` checks all
of it before training starts and reports every problem in one message.

Samples are addressed by ``(epoch, index)``: indices below the number of real images (times two with
``data.mirror``) are real, the rest synthetic. A synthetic sample is only a latent ``z`` and two cameras
drawn from a seed made of (run seed, epoch, index): the worker processes stay light, every sample is
reproducible whatever the number of workers or processes (``data.synthetic_refresh=false`` keeps epoch 0's
samples for every epoch), and the frozen generator renders the batch's
synthetic rows in the main process (:func:`render_synthetic`). :class:`EpochSampler` shards each epoch's
permutation like ``DistributedSampler`` (it is one) and can start in the middle of an epoch, which is
how a resumed run continues with the very samples the interrupted run would have seen.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, DistributedSampler, Sampler

from vidtriplane.config.train import CameraSampling
from vidtriplane.errors import UsageError
from vidtriplane.geometry.camera import flip_yaw, lookat_label
from vidtriplane.geometry.constants import LABEL_DIM

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SHOW = 5  # names listed per problem
VALIDATION_EPOCH = -1  # the epoch number of the fixed synthetic validation samples


class DataError(UsageError):
    """A dataset folder that cannot be trained on; the message lists every problem found."""


def _listing(names: list[str]) -> str:
    more = f", ... ({len(names) - SHOW} more)" if len(names) > SHOW else ""
    return ", ".join(names[:SHOW]) + more


@dataclass(frozen=True)
class LabelledImages:
    """A checked dataset folder."""

    root: Path
    names: tuple[str, ...]
    """Image files relative to ``root``, in dataset.json order."""
    labels: np.ndarray
    """float32 [N, 25] camera labels."""
    conf_dir: Optional[Path] = None
    """Folder of confidence maps ``<stem>.npy`` (v2), or None."""

    def __len__(self) -> int:
        return len(self.names)


def _bad_label(value) -> bool:
    if not isinstance(value, (list, tuple)) or len(value) != LABEL_DIM:
        return True
    return not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)


def _unreadable(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
        return False
    except Exception:  # noqa: BLE001 - any failure to parse the file means "unreadable"
        return True


def scan_dataset(folder: str | Path, *, what: str = "data.dataset") -> LabelledImages:
    """Check a dataset folder and read its labels; raise :class:`DataError` naming every problem."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"{what}: {root} is not a folder (give the output folder of `vidtriplane preprocess`)")
    meta = root / "dataset.json"
    if not meta.is_file():
        raise DataError(f"{what}: {root} has no dataset.json (camera labels); make the folder with "
                        "`vidtriplane preprocess VIDEO_OR_IMAGES -o FOLDER`")
    try:
        entries = json.loads(meta.read_text())["labels"]
        pairs = [(str(e[0]), e[1]) for e in entries]
    except (ValueError, KeyError, TypeError, IndexError):
        raise DataError(f"{meta} is not in the official format {{\"labels\": [[name, [25 numbers]], ...]}}") from None
    problems = []
    names = [name.replace("\\", "/") for name, _ in pairs]
    bad = [n for n, (_, value) in zip(names, pairs) if _bad_label(value)]
    if bad:
        problems.append(f"{len(bad)} label(s) are not 25 finite numbers: {_listing(bad)}")
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        problems.append(f"{len(missing)} label(s) name images that do not exist: {_listing(missing)}")
    labelled = set(names)
    unlabelled = sorted(p.name for p in root.iterdir()
                        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and p.name not in labelled)
    if unlabelled:
        problems.append(f"{len(unlabelled)} image(s) have no label in dataset.json: {_listing(unlabelled)}")
    unreadable = [n for n in names if n not in missing and _unreadable(root / n)]
    if unreadable:
        problems.append(f"{len(unreadable)} image(s) cannot be read: {_listing(unreadable)}")
    if not names:
        problems.append("dataset.json lists no images")
    if problems:
        raise DataError(f"{what} {root} cannot be used: " + "; ".join(problems) + ". Fix or remove these entries "
                        "(or re-run `vidtriplane preprocess`).")
    labels = np.asarray([value for _, value in pairs], dtype=np.float32).reshape(-1, LABEL_DIM)
    return LabelledImages(root=root, names=tuple(names), labels=labels)


def with_conf_maps(images: LabelledImages, folder: str = "") -> LabelledImages:
    """Attach the confidence-map folder (``folder`` or ``DATASET/conf_map``) when it exists; say so otherwise."""
    conf = Path(folder).expanduser() if folder else images.root / "conf_map"
    if not conf.is_dir():
        log.info("no confidence maps in %s: the v2 mirror pixel losses weigh every pixel by 1", conf)
        return images
    missing = [n for n in images.names if not (conf / f"{Path(n).stem}.npy").is_file()]
    if missing:
        log.info("%d of %d images have no confidence map in %s (%s): those weigh every pixel by 1", len(missing),
                 len(images), conf, _listing(missing))
    return LabelledImages(images.root, images.names, images.labels, conf_dir=conf)


# ---------------------------------------------------------------------------------------------------
# Pixels


def resize_image(x: torch.Tensor, size: int) -> torch.Tensor:
    """[..., C, H, W] -> size x size. Integer down-scaling factors take the box mean (for 2x exactly the
    official ``Resize`` = bilinear without antialiasing); other sizes are bilinear."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    flat = x.reshape(-1, *x.shape[-3:])
    if h % size == 0 and w % size == 0:
        out = F.adaptive_avg_pool2d(flat, (size, size))
    else:
        out = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
    return out.reshape(*x.shape[:-2], size, size)


def load_image(path: Path, size: int) -> torch.Tensor:
    """An image file -> float [3, size, size] in [-1, 1]."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
    return resize_image(x, size)


def load_conf_map(path: Path, size: int) -> torch.Tensor:
    """A confidence map ``.npy`` [H, W] -> mirrored left-right (the v2 dataset does) and resized: [size, size]."""
    conf = torch.from_numpy(np.load(path).astype(np.float32))
    if conf.ndim != 2:
        raise DataError(f"confidence map {path} has shape {list(conf.shape)}; expected [H, W]")
    return resize_image(conf.flip(-1)[None], size)[0]


# ---------------------------------------------------------------------------------------------------
# Samples


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one synthetic sample, from the run seed, the epoch and the sample index."""
    words = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index]).generate_state(2)
    return int(words[0]) << 31 ^ int(words[1])


def draw_cameras(gen: Optional[torch.Generator], n: int, cam: CameraSampling) -> tuple[torch.Tensor, torch.Tensor]:
    """(rendering labels [n, 25], mapping-network labels [n, 25]) drawn with ``gen`` (None: torch's global RNG)."""
    yaw = (torch.randn(n, generator=gen) * cam.yaw_std).clamp(*cam.yaw_range)
    pitch = (torch.randn(n, generator=gen) * cam.pitch_std).clamp(*cam.pitch_range)
    c = lookat_label(yaw, pitch)
    cond = lookat_label(torch.zeros(n), torch.zeros(n)) if cam.conditioning == "frontal" else c
    return c.float(), cond.float()


class TrainSamples(Dataset):
    """Real (optionally x-flipped) and synthetic samples addressed by ``(epoch, index)``; see the module docstring.

    Every item is a dict: ``image`` float [3, S, S] in [-1, 1] (zeros for a synthetic sample), ``label``
    [25], ``z`` [z_dim] and ``c_cond`` [25] (synthetic only), ``synthetic`` bool, ``conf`` [C, C] (zeros
    when there is no map: the mirror losses then weigh pixels by 1)."""

    def __init__(self, images: Optional[LabelledImages], *, synthetic: int, image_size: int, conf_size: int,
                 z_dim: int, seed: int, camera: CameraSampling = CameraSampling(), mirror: bool = False,
                 refresh: bool = True) -> None:
        self.images = images
        self.real = 0 if images is None else len(images) * (2 if mirror else 1)
        self.synthetic = synthetic
        self.image_size, self.conf_size, self.z_dim = image_size, conf_size, z_dim
        self.seed, self.camera, self.mirror, self.refresh = seed, camera, mirror, refresh

    def __len__(self) -> int:
        return self.real + self.synthetic

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        if index < self.real:
            return self._real(index)
        draw = epoch if self.refresh or epoch == VALIDATION_EPOCH else 0
        gen = torch.Generator().manual_seed(sample_seed(self.seed, draw, index))
        z = torch.randn(1, self.z_dim, generator=gen)[0]
        c, cond = draw_cameras(gen, 1, self.camera)
        return {"image": torch.zeros(3, self.image_size, self.image_size), "label": c[0], "z": z,
                "c_cond": cond[0], "synthetic": torch.tensor(True),
                "conf": torch.zeros(self.conf_size, self.conf_size)}

    def _real(self, index: int) -> dict[str, torch.Tensor]:
        assert self.images is not None
        flipped, i = divmod(index, len(self.images))
        name = self.images.names[i]
        try:
            image = load_image(self.images.root / name, self.image_size)
        except OSError as exc:
            raise DataError(f"cannot read image {self.images.root / name}: {exc}") from None
        label = torch.from_numpy(self.images.labels[i].copy())
        conf = torch.zeros(self.conf_size, self.conf_size)
        if self.images.conf_dir is not None:
            path = self.images.conf_dir / f"{Path(name).stem}.npy"
            if path.is_file():
                conf = load_conf_map(path, self.conf_size)
        if flipped:
            image, label, conf = image.flip(-1), flip_yaw(label), conf.flip(-1)
        return {"image": image, "label": label.float(), "z": torch.zeros(self.z_dim), "c_cond": label.float(),
                "synthetic": torch.tensor(False), "conf": conf}


def synthetic_count(real: int, ratio: float, epoch_size: int) -> int:
    """Synthetic samples per epoch so that they make up ``ratio`` of it (``epoch_size`` when no real data)."""
    if ratio >= 1.0 or real == 0:
        return epoch_size if ratio > 0 else 0
    return int(round(real * ratio / (1.0 - ratio)))


class EpochSampler(Sampler):
    """One process's share of each epoch's shuffled indices (``DistributedSampler`` with ``drop_last``),
    yielded as ``(epoch, index)`` from a start position within the epoch."""

    def __init__(self, size: int, *, world: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True) -> None:
        self.inner = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed,
                                        drop_last=True)
        self.epoch, self.skip = 0, 0

    def set_position(self, epoch: int, skip: int) -> None:
        """Iterate epoch ``epoch`` from its ``skip``-th index (of this process's share)."""
        self.epoch, self.skip = epoch, skip

    def share(self) -> int:
        """Indices per epoch for this process."""
        return len(self.inner)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        self.inner.set_epoch(self.epoch)
        for k, index in enumerate(self.inner):
            if k >= self.skip:
                yield (self.epoch, int(index))


def batch_stream(loader, sampler: EpochSampler, *, start_step: int, batch_size: int) -> Iterator[dict]:
    """Endless batches; the first one is the one step ``start_step`` of a run takes (exact resumption)."""
    per_epoch = sampler.share() // batch_size
    if per_epoch == 0:
        raise DataError(f"an epoch has {sampler.share()} samples per process, fewer than one batch of {batch_size}; "
                        "add data or lower train.batch_size")
    step = start_step
    while True:
        epoch, offset = divmod(step, per_epoch)
        sampler.set_position(epoch, offset * batch_size)
        for batch in loader:
            yield batch
            step += 1


def worker_init(_worker_id: int) -> None:
    """One torch thread per DataLoader worker (the workers only decode and resize)."""
    torch.set_num_threads(1)


@torch.no_grad()
def render_synthetic(batch: dict[str, torch.Tensor], generator, *, psi: float, cutoff: int,
                     depth_samples: int, importance_samples: int) -> torch.Tensor:
    """The batch's images [B, 3, S, S] with the synthetic rows rendered by the frozen EG3D ``generator``
    (deterministic depth sampling, clamped to [-1, 1] like a saved image) and resized to S."""
    image = batch["image"]
    rows = batch["synthetic"].nonzero().flatten()
    if len(rows) == 0:
        return image
    device = image.device
    ws = generator.mapping(batch["z"][rows], batch["c_cond"][rows], truncation_psi=psi, truncation_cutoff=cutoff)
    out = generator.synthesis(ws, batch["label"][rows], sampling="deterministic", depth_samples=depth_samples,
                              importance_samples=importance_samples).image
    image = image.clone()
    image[rows] = resize_image(out.clamp(-1, 1), image.shape[-1]).to(device, image.dtype)
    return image


__all__ = ["DataError", "EpochSampler", "IMAGE_EXTENSIONS", "LabelledImages", "TrainSamples", "VALIDATION_EPOCH",
           "batch_stream", "draw_cameras", "load_conf_map", "load_image", "render_synthetic", "resize_image",
           "sample_seed", "scan_dataset", "synthetic_count", "with_conf_maps", "worker_init"]
