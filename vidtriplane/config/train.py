"""The ``vidtriplane train`` configuration (``kind: train``): frozen dataclasses, nothing heavy imported.

Defaults are the official v1 recipe (``tpn:options/train_options.py``, ``tpn:training/coach.py``):
batch 4, one Ranger per branch at lr 1e-4, the pSp branch trains until step 500,000, the tri-plane branch
from step 20,000, 1,000,000 steps. ``configs/train-v1.yaml``, ``train-v2.yaml`` and ``train-tiny.yaml``
are the presets. Sections:

* ``model``    which TriPlaneNet (version, size, v2 decoder variant), encoder initialisation, EG3D, D;
* ``data``     the dataset folder, synthetic EG3D samples and how their cameras are drawn;
* ``loss``     the weights of every loss term (:class:`LossConfig`);
* ``optim``    learning rates and the Ranger settings;
* ``train``    the schedule (steps, phases, intervals, batch) and the training render settings;
* ``runtime``  device, precision, gradient checkpointing, seed, determinism.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

LOSS_NETWORK_FILES = ("alexnet", "lpips-alex-v0.1", "ir-se50")
"""Registry entries the LPIPS and ID loss terms read."""


@dataclass(frozen=True)
class LossConfig:
    """Weights of every loss term (``tpn:options/train_options.py``, ``train_options_v2.py``).

    Defaults: v1 for the shared terms, v2 values for the v2-only terms. A weight of 0 switches a term off
    (it is neither computed nor reported)."""

    networks: Literal["registry", "none"] = "registry"
    """registry: LPIPS (AlexNet + v0.1 heads) and ArcFace IR-SE-50 from the weight registry (fetched on
    first use); none: skip the LPIPS and ID terms (tiny plumbing runs; said once in the log)."""
    l2_lambda_psp: float = 1.0
    """MSE between the pSp render (256) and the input."""
    lpips_lambda_psp: float = 0.8
    """LPIPS between the pSp render and the input."""
    id_lambda_psp: float = 0.1
    """ID loss (1 - cosine of ArcFace embeddings) between the pSp render and the input."""
    l1_lambda_triplane: float = 1.0
    """Smooth-L1 between the tri-plane render (256) and the input."""
    smooth_l1_beta: float = 1.0
    """Beta of the smooth-L1 terms (PyTorch's default)."""
    lpips_lambda_triplane: float = 0.1
    """LPIPS between the tri-plane render and the input (0.1 in v1, 0.8 in v2)."""
    id_lambda_triplane: float = 0.1
    """ID loss between the tri-plane render and the input."""

    mirror_lambda: float = 0.1
    """v2: weight of each branch's mirror loss (render at the mirrored camera vs the flipped input)."""
    l2_lambda_psp_mirror: float = 1.0
    """v2: confidence-weighted MSE of the pSp mirror render."""
    lpips_lambda_psp_mirror: float = 0.8
    """v2: LPIPS of the pSp mirror render."""
    id_lambda_psp_mirror: float = 0.1
    """v2: ID loss of the pSp mirror render."""
    l1_lambda_triplane_mirror: float = 1.0
    """v2: confidence-weighted smooth-L1 of the tri-plane mirror render."""
    lpips_lambda_triplane_mirror: float = 0.8
    """v2: LPIPS of the tri-plane mirror render."""
    id_lambda_triplane_mirror: float = 0.1
    """v2: ID loss of the tri-plane mirror render."""
    conf_eps: float = 1.0
    """v2: pixel losses of the mirror terms are divided by (confidence + conf_eps) (``EPS = 1``)."""

    adv_lambda: float = 0.005
    """v2: weight of the non-saturating generator loss on the tri-plane branch's renders."""
    r1_gamma: float = 10.0
    """v2: R1 penalty weight; the penalty is gamma / 2 * E||grad D(real)||^2 * r1_every (lazy regularisation)."""
    r1_every: int = 16
    """v2: apply the R1 penalty every this many discriminator steps."""

    def __post_init__(self) -> None:
        negative = [f.name for f in fields(self) if f.name != "networks" and getattr(self, f.name) < 0]
        if negative:
            raise ValueError(f"loss weights must be >= 0; negative: {', '.join(negative)}")
        if self.r1_every < 1:
            raise ValueError(f"r1_every must be >= 1, got {self.r1_every}")
        if self.smooth_l1_beta <= 0 or self.conf_eps <= 0:
            raise ValueError("smooth_l1_beta and conf_eps must be > 0")

    @classmethod
    def v1(cls) -> "LossConfig":
        """TriPlaneNet v1 (the v2-only weights are unused by the v1 losses)."""
        return cls()

    @classmethod
    def v2(cls) -> "LossConfig":
        """TriPlaneNet v2: tri-plane LPIPS raised to 0.8."""
        return cls(lpips_lambda_triplane=0.8)

    def replace(self, **changes) -> "LossConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class TrainModelConfig:
    """The network being trained and the frozen networks around it."""

    version: int = 1
    """TriPlaneNet version (1: offsets from [y, x - y]; 2: refined planes from a 9-channel mirror input)."""
    size: Literal["full", "tiny"] = "full"
    """full: the official architecture; tiny: narrow encoders + a tiny generated EG3D (plumbing, minutes on a CPU)."""
    variant: Literal["pixelshuffle", "upsample"] = "upsample"
    """v2 decoder variant (``use_pixelshuffle``; the official argparse default is the nearest upsample)."""
    init: str = "ir-se50"
    """Initialisation of both encoders' trunks: a registry entry (``ir-se50``: InsightFace IR-SE-50, loaded
    non-strictly, extra first-conv channels = noise) or ``none`` (PyTorch's default init)."""
    eg3d: str = "eg3d-ffhq512-128"
    """The frozen generator: a registry entry (its latent_avg is the W+ origin) or ``generated``
    (deterministic random weights from ``seed``; plumbing and benchmarks only)."""
    seed: int = 0
    """Seed of generated EG3D weights."""
    discriminator: str = "none"
    """v2 GAN: none (the official default, no GAN terms), random (a freshly initialised discriminator) or
    the path of a discriminator state_dict file (the official ``discriminator.pth``)."""

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"model.version must be 1 or 2, got {self.version}")
        if self.size == "tiny" and self.eg3d != "generated":
            raise ValueError("model.size=tiny needs model.eg3d=generated (the tiny generator has no real weights)")
        if self.size == "tiny" and self.init != "none":
            raise ValueError("model.size=tiny needs model.init=none (IR-SE-50 weights fit the full-size encoders only)")
        if not self.init or not self.eg3d or not self.discriminator:
            raise ValueError("model.init, model.eg3d and model.discriminator must not be empty (use none / generated)")


@dataclass(frozen=True)
class CameraSampling:
    """Cameras of the synthetic samples: yaw and pitch (radians from frontal) from truncated normals about
    the frontal view, roughly the spread of FFHQ's poses; look-at cameras at radius 2.7, FFHQ intrinsics."""

    yaw_std: float = 0.3
    """Standard deviation of the yaw."""
    yaw_range: tuple[float, float] = (-0.8, 0.8)
    """Yaws are clamped to this range."""
    pitch_std: float = 0.15
    """Standard deviation of the pitch."""
    pitch_range: tuple[float, float] = (-0.4, 0.4)
    """Pitches are clamped to this range."""
    conditioning: Literal["frontal", "same"] = "frontal"
    """Camera fed to the mapping network: the frontal look-at camera (EG3D's own sampling scripts) or the
    rendering camera."""

    def __post_init__(self) -> None:
        if self.yaw_std < 0 or self.pitch_std < 0:
            raise ValueError("data.camera.yaw_std and pitch_std must be >= 0")
        if self.yaw_range[0] > self.yaw_range[1] or self.pitch_range[0] > self.pitch_range[1]:
            raise ValueError("data.camera ranges must be [low, high] with low <= high")


@dataclass(frozen=True)
class DataConfig:
    """Training data: aligned crops + dataset.json, mixed with EG3D samples synthesised on the fly."""

    dataset: str = ""
    """Folder of aligned 512 crops + ``dataset.json`` (what ``vidtriplane preprocess`` writes); empty when
    ``synthetic_ratio`` is 1."""
    val_dataset: str = ""
    """Validation folder (same format); empty = a fixed set of synthetic samples (seeded, never trained on)."""
    synthetic_ratio: float = 0.5
    """Fraction of synthetic EG3D samples among the training samples (0 = real only, 1 = synthetic only)."""
    synthetic_epoch: int = 10000
    """Samples per epoch when training on synthetic samples only."""
    synthetic_refresh: bool = True
    """Draw new synthetic samples every epoch (endless variety); false = the same synthetic set every epoch."""
    truncation_psi: float = 0.7
    """Truncation of the synthetic latents towards the average W."""
    truncation_cutoff: int = 14
    """Number of W+ rows truncated (14 = all, as EG3D's sampling scripts)."""
    camera: CameraSampling = CameraSampling()
    """How the synthetic samples' cameras are drawn."""
    workers: int = 4
    """DataLoader worker processes reading and resizing the images (0 = in the main process)."""
    mirror: bool = False
    """Also train on the left-right mirrored copy of every real image with the flipped camera (EG3D's
    x-flip; the official TriPlaneNet adds none). v2's mirror *input* is always made."""
    conf_maps: str = ""
    """v2: folder of unsup3d confidence maps ``NAME.npy`` (256x256 float32); empty = ``DATASET/conf_map``.
    Missing maps weigh the mirror pixel losses by 1 (said once)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.synthetic_ratio <= 1.0:
            raise ValueError(f"data.synthetic_ratio must be in [0, 1], got {self.synthetic_ratio}")
        if self.synthetic_epoch < 1 or self.workers < 0:
            raise ValueError("data.synthetic_epoch must be >= 1 and data.workers >= 0")


@dataclass(frozen=True)
class OptimConfig:
    """One Ranger per branch (``tpn:training/ranger.py``) and Adam for the v2 discriminator."""

    lr_psp: float = 1e-4
    """Learning rate of the pSp branch."""
    lr_triplane: float = 1e-4
    """Learning rate of the tri-plane branch."""
    lr_discriminator: float = 1e-4
    """v2: Adam learning rate of the discriminator (``learning_rate_dis``)."""
    alpha: float = 0.5
    """Ranger Lookahead step towards the fast weights."""
    k: int = 6
    """Ranger Lookahead synchronisation period."""
    n_sma_threshold: float = 5.0
    """RAdam: rectified update only above this length of the approximated SMA."""
    betas: tuple[float, float] = (0.95, 0.999)
    """Ranger moment decays."""
    eps: float = 1e-5
    """Ranger denominator epsilon."""
    weight_decay: float = 0.0
    """Ranger weight decay."""

    def __post_init__(self) -> None:
        if min(self.lr_psp, self.lr_triplane, self.lr_discriminator) <= 0:
            raise ValueError("optim learning rates must be > 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must be two values in [0, 1), got {list(self.betas)}")
        if self.eps <= 0:
            raise ValueError(f"optim.eps must be > 0, got {self.eps}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"optim.alpha (the Lookahead step) must be in (0, 1], got {self.alpha}")
        if self.k < 1:
            raise ValueError(f"optim.k (the Lookahead period) must be >= 1, got {self.k}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Steps, phases, intervals and the renderer settings during training (the ``train:`` section)."""

    max_steps: int = 1_000_000
    """Optimisation steps of the whole run."""
    stop_psp: int = 500_000
    """The pSp branch trains on steps < stop_psp, then is frozen (eval mode)."""
    add_triplanenet: int = 20_000
    """The tri-plane branch trains on steps >= add_triplanenet."""
    add_discriminator: int = 600_000
    """v2 GAN: the discriminator and the adversarial term start at this step."""
    batch_size: int = 4
    """Samples per step over all processes (each of N processes takes batch_size / N)."""
    val_every: int = 2500
    """Validate every this many steps (and at the last step); best.pt follows the validation loss."""
    val_batches: int = 8
    """Validation batches (of batch_size samples)."""
    save_every: int = 5000
    """Write checkpoints/last.pt every this many steps (and at the last step)."""
    image_every: int = 1000
    """Write an image grid (input | first branch | final | novel view) every this many steps."""
    log_every: int = 50
    """Append the loss terms to metrics.jsonl every this many steps."""
    depth_samples: int = 48
    """Coarse samples per ray while training (the checkpoint's 48; inference uses 96)."""
    importance_samples: int = 48
    """Importance samples per ray while training."""
    sampling: Literal["stochastic", "deterministic"] = "stochastic"
    """Depth sampling of the training renders: stochastic (the official renderer's jitter) or deterministic."""
    novel_yaw: float = 0.4
    """Yaw of the novel view in the image grids (radians)."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "val_every", "save_every", "image_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.val_batches < 0 or self.stop_psp < 0 or self.add_triplanenet < 0 or self.add_discriminator < 0:
            raise ValueError("train.val_batches, stop_psp, add_triplanenet and add_discriminator must be >= 0")
        if self.add_triplanenet > self.stop_psp:
            raise ValueError(f"train.add_triplanenet ({self.add_triplanenet}) must not exceed train.stop_psp "
                             f"({self.stop_psp}): steps in between would train neither branch")
        if self.depth_samples < 2 or self.importance_samples < 0:
            raise ValueError("train.depth_samples must be >= 2 and train.importance_samples >= 0")


@dataclass(frozen=True)
class TrainRuntimeConfig:
    """Where and how the computation runs."""

    device: str = "auto"
    """auto (cuda if available), cpu, cuda, cuda:1; under torchrun each process takes cuda:LOCAL_RANK."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: autocast the encoders and the generator to bfloat16 (losses and optimisers stay float32)."""
    gradient_checkpointing: bool = False
    """Recompute the encoder trunk units in the backward pass instead of storing their activations."""
    seed: int = 0
    """Seed of the encoders' initialisation, the data order and the synthetic samples."""
    deterministic: bool = False
    """Deterministic algorithms only (torch.use_deterministic_algorithms): bitwise-repeatable runs and resumes."""
    torch_threads: int = 0
    """CPU threads for torch; 0 = torch's default."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``vidtriplane train`` does, resolved from presets and ``--set`` overrides."""

    model: TrainModelConfig = TrainModelConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: ScheduleConfig = ScheduleConfig()
    runtime: TrainRuntimeConfig = TrainRuntimeConfig()

    def __post_init__(self) -> None:
        if self.model.discriminator != "none" and self.model.version != 2:
            raise ValueError("model.discriminator is a TriPlaneNet v2 option; use none with model.version=1")

    @property
    def gan(self) -> bool:
        """Whether the v2 GAN terms run (a discriminator and a non-zero adv_lambda)."""
        return self.model.version == 2 and self.model.discriminator != "none" and self.loss.adv_lambda > 0

    @property
    def model_identity(self) -> dict:
        """What a checkpoint of this run holds; a resume with another identity is refused."""
        m = self.model
        return {"version": m.version, "size": m.size, "variant": m.variant if m.version == 2 else "pixelshuffle",
                "eg3d": m.eg3d, "seed": m.seed if m.eg3d == "generated" else None}


__all__ = ["CameraSampling", "DataConfig", "LossConfig", "OptimConfig", "ScheduleConfig", "TrainConfig",
           "TrainModelConfig", "TrainRuntimeConfig"]
