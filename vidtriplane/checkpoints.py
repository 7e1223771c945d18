"""Checkpoint formats: the one module that knows the layout of every weight file vidtriplane reads or writes.

* TriPlaneNet v1 ``.pth`` (what ``tpn:training/coach.py`` saves, ``triplanenet_final.pth``):
  ``{'state_dict': 1182 tensors under PARTS' prefixes, 'opts': dict, 'best_val_loss', 'step', optimizers}``.
  ``tpn:models/triplanenet.py`` loads it strictly; so do we.
* TriPlaneNet v2 ``.pth``: the same layout with the 9-channel encoder. ``tpn:models/triplanenet_v2.py``
  loads it non-strictly; we require every model key with the right shape, tolerate (and log) extra keys,
  and tell the decoder variant from ``VARIANT_KEY`` (384 channels: pixel shuffle, 768: upsample).
* EG3D ``.pth`` (``ffhq512-128.pth``, the TriPlaneNet authors' conversion read by
  ``tpn:models/triplanenet.py``): ``{'G_ema': state_dict, 'init_kwargs': dict, 'latent_avg': [512]}``.
* A converted NVIDIA ``.pkl`` (written by ``vidtriplane weights import eg3d-ffhq512-128-pkl``):
  ``<stem>.safetensors`` (the tensors) + ``<stem>.json`` (constructor kwargs, provenance); it reads back in
  the layout of the EG3D ``.pth``.

* TriPlaneNet v1 ``.pth``: ``{'state_dict': 1182 tensors (psp_encoder.*, triplanenet_encoder.*,
  decoder.*), 'opts': dict, ...}``; loaded strictly (``tpn:training/coach.py`` writes it).
* TriPlaneNet v2 ``.pth``: same layout with the 9-channel encoder; we require every model key with the
  right shape, tolerate (and log) extra keys, and detect the decoder variant from tensor shapes.
* EG3D ``.pth`` (``ffhq512-128.pth``): ``{'G_ema': state_dict, 'init_kwargs': dict, 'latent_avg': [512]}``,
  or NVIDIA's ``.pkl`` converted by ``vidtriplane weights import`` (safetensors + JSON).
* Loss/metric networks: torchvision's AlexNet + LPIPS ``alex.pth`` (:func:`load_lpips`), the ArcFace
  IR-SE-50 / CurricularFace IR-101 state_dicts (:func:`load_face_embedder`); all loaded strictly.
* MTCNN ``mtcnn.pt`` (written by ``vidtriplane weights import mtcnn`` from facenet-pytorch's ``pnet.pt``,
  ``rnet.pt``, ``onet.pt``): one state_dict, keys prefixed ``pnet.``, ``rnet.``, ``onet.`` (:func:`load_mtcnn`).

Torch files are opened by :func:`vidtriplane.weights.loader.load_torch` (``weights_only``, nothing
executed) and checked by :func:`vidtriplane.models.state.check_state_dict`. Models never read files.
"""
from __future__ import annotations

import collections
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import torch

from vidtriplane.models.arcface import FaceEmbedder, FaceEmbedderConfig
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator
from vidtriplane.models.encoders import PSPConfig, TriPlaneEncoderConfig
from vidtriplane.models.lpips import LPIPS
from vidtriplane.models.mtcnn import MTCNN
from vidtriplane.models.state import StateDictMismatch, check_state_dict, load_strict
from vidtriplane.models.triplanenet import TriPlaneNet, TriPlaneNetConfig, TriPlaneNetV2
from vidtriplane.weights.loader import CheckpointError, read_torch_file
from vidtriplane.weights.pickle_safe import ExtractedNetwork

log = logging.getLogger(__name__)

PathLike = str | Path
Variant = Literal["pixelshuffle", "upsample"]
# state_dict prefix of each TriPlaneNet part -> its name in the official state_dict manifest
PARTS: dict[str, str] = {"psp_encoder.": "psp_encoder", "triplanenet_encoder.": "triplanenet_encoder",
                         "decoder.": "eg3d_G"}
PREFIXES = tuple(PARTS)
VARIANT_KEY = "triplanenet_encoder.up2.conv.double_conv.0.weight"
INPUT_KEY = "triplanenet_encoder.input_layer.0.weight"


def encoder_part(version: int, variant: Variant = "pixelshuffle") -> str:
    """Manifest name of the tri-plane encoder: ``triplanenet_encoder`` (v1) or ``triplanenet_v2_encoder_<variant>``."""
    return "triplanenet_encoder" if version == 1 else f"triplanenet_v2_encoder_{variant}"


def tensor_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """``obj`` as a state_dict (a dict of named tensors), else :class:`CheckpointError`."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where} is a {type(obj).__name__}, expected a dict of tensors")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where} has {len(bad)} entries that are not named tensors: {bad[:5]}")
    return dict(obj)


def _require(obj: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CheckpointError(f"{where} lacks the key(s) {missing} (has {sorted(map(str, obj))[:10]}); "
                              "is it the right file?")


# ---------------------------------------------------------------------------------------------------
# EG3D


@dataclass(frozen=True)
class EG3DCheckpoint:
    """Contents of an official EG3D torch file."""

    state_dict: dict[str, torch.Tensor]
    """``G_ema``: the generator's tensors (176 for FFHQ-512)."""
    config: EG3DConfig
    """Built from ``init_kwargs``."""
    latent_avg: torch.Tensor
    """Average W [w_dim]."""


def eg3d_config_from_init_kwargs(init_kwargs: Mapping[str, Any]) -> EG3DConfig:
    """Map the official ``TriPlaneGenerator`` constructor kwargs onto :class:`EG3DConfig`.

    The super-resolution module path in ``rendering_kwargs`` is ignored (always the 8XDC module) and
    ``neural_rendering_resolution`` stays 128, as ``tpn:models/triplanenet.py`` sets after construction."""
    kw = dict(init_kwargs)
    rk = dict(kw.get("rendering_kwargs") or {})
    mk = dict(kw.get("mapping_kwargs") or {})
    base = EG3DConfig()
    fields: dict[str, Any] = {
        "z_dim": kw.get("z_dim", base.z_dim),
        "w_dim": kw.get("w_dim", base.w_dim),
        "c_dim": kw.get("c_dim", base.c_dim),
        "img_resolution": kw.get("img_resolution", base.img_resolution),
        "channel_base": kw.get("channel_base", base.channel_base),
        "channel_max": kw.get("channel_max", base.channel_max),
        "mapping_layers": mk.get("num_layers", base.mapping_layers),
    }
    for src, dst in (("depth_resolution", "depth_resolution"),
                     ("depth_resolution_importance", "depth_resolution_importance"),
                     ("ray_start", "ray_start"), ("ray_end", "ray_end"), ("box_warp", "box_warp"),
                     ("avg_camera_radius", "avg_camera_radius"), ("c_scale", "c_scale"),
                     ("c_gen_conditioning_zero", "c_gen_conditioning_zero"),
                     ("superresolution_noise_mode", "sr_noise_mode"), ("sr_antialias", "sr_antialias"),
                     ("decoder_lr_mul", "decoder_lr_multiplier")):
        if src in rk:
            fields[dst] = rk[src]
    if "avg_camera_pivot" in rk:
        fields["avg_camera_pivot"] = tuple(float(v) for v in rk["avg_camera_pivot"])
    if rk.get("ray_start") == "auto" or rk.get("clamp_mode", "softplus") != "softplus":
        raise CheckpointError(f"unsupported EG3D rendering settings {rk}: only the FFHQ-style "
                              "(numeric ray_start/ray_end, softplus) models are implemented")
    try:
        return EG3DConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"EG3D init_kwargs do not give a valid configuration: {exc}") from None


def parse_eg3d(obj: Mapping[str, Any], where: str) -> EG3DCheckpoint:
    """Check the layout of a loaded EG3D file (``where`` names it in messages); no model is built."""
    _require(obj, ("G_ema", "init_kwargs", "latent_avg"), where)
    sd = tensor_dict(obj["G_ema"], f"{where}: 'G_ema'")
    if not isinstance(obj["init_kwargs"], Mapping):
        raise CheckpointError(f"{where}: 'init_kwargs' is a {type(obj['init_kwargs']).__name__}, expected a dict")
    config = eg3d_config_from_init_kwargs(obj["init_kwargs"])
    latent_avg = obj["latent_avg"]
    if not isinstance(latent_avg, torch.Tensor) or (
            latent_avg.numel() != config.w_dim and tuple(latent_avg.shape) != (config.num_ws, config.w_dim)):
        shape = list(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
        raise CheckpointError(f"{where}: 'latent_avg' must be a [{config.w_dim}] tensor, got {shape}")
    if latent_avg.numel() == config.w_dim:
        latent_avg = latent_avg.reshape(config.w_dim)
    return EG3DCheckpoint(state_dict=sd, config=config, latent_avg=latent_avg.float())


def read_eg3d_checkpoint(path: PathLike) -> EG3DCheckpoint:
    """Read and check an EG3D torch file, or a converted NVIDIA pickle (``.safetensors`` + ``.json``)."""
    path = Path(path)
    obj = converted_as_eg3d_pth(path) if path.suffix == ".safetensors" else read_torch_file(path, kind="EG3D")
    return parse_eg3d(obj, f"EG3D file {path}")


def load_eg3d(path: PathLike) -> tuple[EG3DGenerator, torch.Tensor]:
    """The generator of an EG3D torch file (``G_ema``, keys and shapes checked) and its latent_avg [w_dim]."""
    ckpt = read_eg3d_checkpoint(path)
    G = EG3DGenerator(ckpt.config).eval().requires_grad_(False)
    load_strict(G, ckpt.state_dict, what=f"EG3D generator 'G_ema' in {path}")
    return G, ckpt.latent_avg


# ---------------------------------------------------------------------------------------------------
# TriPlaneNet


def detect_version(state_dict: Mapping[str, torch.Tensor]) -> int:
    """1 or 2, from the input channels of the tri-plane encoder (6 or 9)."""
    if INPUT_KEY not in state_dict:
        raise CheckpointError(f"not a TriPlaneNet state_dict: it has no {INPUT_KEY!r}")
    channels = state_dict[INPUT_KEY].shape[1] if len(state_dict[INPUT_KEY].shape) == 4 else None
    if channels not in (6, 9):
        raise CheckpointError(f"{INPUT_KEY} has shape {list(state_dict[INPUT_KEY].shape)}; expected "
                              "[64, 6, 3, 3] (v1) or [64, 9, 3, 3] (v2)")
    return 1 if channels == 6 else 2


def detect_v2_variant(state_dict: Mapping[str, torch.Tensor]) -> Variant:
    """The v2 decoder variant from tensor shapes: up2's BatchNorm has 384 (pixel shuffle) or 768 channels."""
    if VARIANT_KEY not in state_dict:
        raise CheckpointError(f"cannot tell the v2 decoder variant: the state_dict has no {VARIANT_KEY!r}")
    n = state_dict[VARIANT_KEY].numel()
    width = state_dict[INPUT_KEY].shape[0] if INPUT_KEY in state_dict else 64
    if n == 6 * width:
        return "pixelshuffle"
    if n == 12 * width:
        return "upsample"
    raise CheckpointError(f"{VARIANT_KEY} has {n} channels; expected {6 * width} (pixelshuffle) or "
                          f"{12 * width} (upsample)")


@dataclass(frozen=True)
class TriPlaneNetCheckpoint:
    """Contents of an official TriPlaneNet v1/v2 checkpoint."""

    state_dict: dict[str, torch.Tensor]
    opts: dict[str, Any]
    version: int
    variant: Variant
    """v2 decoder variant (``"pixelshuffle"`` for v1)."""


def parse_triplanenet(obj: Mapping[str, Any], where: str) -> TriPlaneNetCheckpoint:
    """Check the layout of a loaded TriPlaneNet checkpoint and detect its version and decoder variant."""
    _require(obj, ("state_dict",), where)
    sd = tensor_dict(obj["state_dict"], f"{where}: 'state_dict'")
    opts = obj.get("opts") or {}
    if not isinstance(opts, Mapping):
        raise CheckpointError(f"{where}: 'opts' is a {type(opts).__name__}, expected a dict")
    prefixes = {k.split(".", 1)[0] + "." for k in sd}
    missing = [p for p in PREFIXES if p not in prefixes]
    if missing:
        raise CheckpointError(f"{where}: 'state_dict' has no {missing} entries (found prefixes {sorted(prefixes)})")
    try:
        version = detect_version(sd)
        variant: Variant = detect_v2_variant(sd) if version == 2 else "pixelshuffle"
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    if version == 2 and "use_pixelshuffle" in opts and bool(opts["use_pixelshuffle"]) != (variant == "pixelshuffle"):
        log.warning("%s: opts.use_pixelshuffle=%s disagrees with the tensor shapes (%s); using the shapes",
                    where, opts["use_pixelshuffle"], variant)
    return TriPlaneNetCheckpoint(state_dict=sd, opts=dict(opts), version=version, variant=variant)


def read_triplanenet_checkpoint(path: PathLike) -> TriPlaneNetCheckpoint:
    """Read an official TriPlaneNet file and detect its version and (v2) decoder variant."""
    return parse_triplanenet(read_torch_file(path, kind="TriPlaneNet checkpoint"), f"TriPlaneNet checkpoint {path}")


def load_triplanenet(
    path: PathLike,
    *,
    eg3d: PathLike | EG3DCheckpoint | None = None,
    config: TriPlaneNetConfig | None = None,
) -> TriPlaneNet | TriPlaneNetV2:
    """Build and load a TriPlaneNet (v1 strict, v2 structure-checked) from an official checkpoint.

    ``eg3d``: the EG3D torch file (or its parsed contents) giving ``latent_avg`` and the generator
    configuration; without it the FFHQ-512 defaults are used and ``latent_avg`` = ``mapping.w_avg``.
    ``config`` overrides the shapes (e.g. tiny test models)."""
    ckpt = read_triplanenet_checkpoint(path)
    eg = read_eg3d_checkpoint(eg3d) if isinstance(eg3d, (str, Path)) else eg3d
    if config is None and (trained := trained_model(ckpt, eg)) is not None:  # a `vidtriplane train` file
        config, eg = trained
    if config is None:
        g = eg.config if eg is not None else EG3DConfig()
        psp = PSPConfig(style_dim=g.w_dim, n_styles=g.num_ws, input_size=g.backbone_resolution)
        enc = TriPlaneEncoderConfig() if ckpt.version == 1 else TriPlaneEncoderConfig.v2(ckpt.variant)
        config = TriPlaneNetConfig(psp=psp, encoder=enc, eg3d=g)
    net: TriPlaneNet | TriPlaneNetV2 = TriPlaneNet(config) if ckpt.version == 1 else TriPlaneNetV2(config)
    if eg is not None:
        # The TriPlaneNet file's decoder.* entries override G_ema; check G_ema fits all the same.
        check_state_dict(net.decoder, eg.state_dict, what="EG3D generator 'G_ema'")
    what = f"TriPlaneNet v{ckpt.version} checkpoint {path}"
    state = ckpt.state_dict
    if ckpt.version == 2:
        expected = net.state_dict()
        extra = [k for k in state if k not in expected]
        if extra:
            log.warning("%s: ignoring %d entries the model does not have: %s", what, len(extra), extra[:5])
        state = {k: v for k, v in state.items() if k in expected}
    load_strict(net, state, what=what)
    if eg is not None:
        net.set_latent_avg(eg.latent_avg)
    else:
        log.info("no EG3D file given: latent_avg = decoder.backbone.mapping.w_avg repeated %d times",
                 config.psp.n_styles)
        net.set_latent_avg(net.decoder.backbone.mapping.w_avg)
    return net.eval()


# ---------------------------------------------------------------------------------------------------
# Checkpoints written by `vidtriplane train` (train-loop): they describe their own model


def trained_model(ckpt: TriPlaneNetCheckpoint,
                  eg: EG3DCheckpoint | None) -> tuple[TriPlaneNetConfig, EG3DCheckpoint] | None:
    """The model a ``vidtriplane train`` checkpoint describes in ``opts["vidtriplane"]`` (any size, e.g. tiny)
    and its latent_avg; the generator comes from the checkpoint's ``decoder.*`` unless an EG3D file is
    given. None for other checkpoints (the official ones)."""
    from dataclasses import replace

    from vidtriplane.config.base import from_mapping

    desc = ckpt.opts.get("vidtriplane")
    if not isinstance(desc, Mapping):
        return None
    try:
        config = from_mapping(TriPlaneNetConfig, desc["model"])
        latent_avg = desc["latent_avg"]
        assert isinstance(latent_avg, torch.Tensor)
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise CheckpointError(f"opts['vidtriplane'] of this checkpoint does not describe a model ({exc}); "
                              "was it written by another vidtriplane version?") from None
    if eg is None:
        decoder = {k[len("decoder."):]: v for k, v in ckpt.state_dict.items() if k.startswith("decoder.")}
        return config, EG3DCheckpoint(state_dict=decoder, config=config.eg3d, latent_avg=latent_avg)
    return config, replace(eg, latent_avg=latent_avg)


# ---------------------------------------------------------------------------------------------------
# Loss and metric networks


def load_lpips(alexnet: PathLike, linear: PathLike) -> LPIPS:
    """LPIPS from torchvision's AlexNet file (``alexnet-owt-7be5be79.pth``; its ``classifier.*`` entries
    are dropped) and the v0.1 linear heads (``alex.pth``); strict, frozen, in eval mode."""
    alex = tensor_dict(read_torch_file(alexnet, kind="AlexNet"), f"{alexnet}: the AlexNet file")
    lins = tensor_dict(read_torch_file(linear, kind="LPIPS linear heads"), f"{linear}: the LPIPS file")
    sd = {"net." + k: v for k, v in alex.items() if not k.startswith("classifier.")}
    sd.update(lins)
    model = LPIPS()
    load_strict(model, sd, what=f"LPIPS (AlexNet {alexnet}, linear heads {linear})")
    return model.eval().requires_grad_(False)


def load_face_embedder(path: PathLike, config: FaceEmbedderConfig = FaceEmbedderConfig.ir_se50()) -> FaceEmbedder:
    """A face-recognition backbone from its state_dict file; strict, frozen, in eval mode.

    ``FaceEmbedderConfig.ir_se50()`` for ``model_ir_se50.pth`` (ID loss), ``FaceEmbedderConfig.ir101()``
    for ``CurricularFace_Backbone.pth`` (ID metric)."""
    sd = tensor_dict(read_torch_file(path, kind="face recognition backbone"), f"{path}")
    model = FaceEmbedder(config)
    load_strict(model, sd, what=f"face recognition backbone {path}")
    return model.eval().requires_grad_(False)


def load_mtcnn(path: PathLike) -> MTCNN:
    """The cached MTCNN file (one state_dict: ``pnet.*``, ``rnet.*``, ``onet.*``) -> the three networks,
    strict, frozen, in eval mode, on the CPU."""
    sd = tensor_dict(read_torch_file(path, kind="MTCNN"), f"{path}: the MTCNN file")
    model = MTCNN()
    load_strict(model, sd, what=f"MTCNN P/R/O-net {path}")
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------
# Converted NVIDIA pickles: safetensors + JSON


def config_path_for(safetensors_path: Path) -> Path:
    """The JSON config stored next to a converted safetensors file."""
    return Path(safetensors_path).with_suffix(".json")


def save_converted(net: ExtractedNetwork, dest: Path, *, provenance: dict | None = None,
                   replace: Callable[[Path, Path], None] = os.replace) -> None:
    """Write ``dest`` (safetensors) and its JSON config, each through a temp file + rename.

    The JSON goes first, the safetensors last, so a present safetensors file means a complete pair.
    """
    from safetensors.torch import save_file

    from vidtriplane.weights.store import atomic_write_text, temp_path_beside

    config = dict(net.config, **({"provenance": provenance} if provenance else {}))
    atomic_write_text(config_path_for(dest), json.dumps(config, indent=2, sort_keys=True) + "\n")
    tensors = {k: v.detach().contiguous().clone() for k, v in net.state_dict.items()}
    tmp = temp_path_beside(dest)
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", "class_name": str(net.config.get("class_name"))})
        replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def read_converted(path: Path) -> ExtractedNetwork:
    """Load a converted network (safetensors + JSON config) back; the inverse of :func:`save_converted`."""
    from safetensors.torch import load_file

    try:
        config = json.loads(config_path_for(path).read_text(encoding="utf-8"))
        tensors = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - any unreadable pair means the same thing to the user
        raise CheckpointError(f"converted network {path} (with {config_path_for(path).name}) cannot be read "
                              f"({type(err).__name__}: {err}); import the .pkl again") from None
    return ExtractedNetwork(state_dict=collections.OrderedDict(tensors), config=config)


def converted_as_eg3d_pth(path: Path) -> dict:
    """A converted EG3D network in the layout of the EG3D ``.pth``: ``{'G_ema', 'init_kwargs', 'latent_avg'}``
    (``latent_avg`` = ``backbone.mapping.w_avg``), so one reader takes either file."""
    net = read_converted(path)
    if "backbone.mapping.w_avg" not in net.state_dict:
        raise CheckpointError(f"{path} has no backbone.mapping.w_avg (is it an EG3D generator?)")
    return {"G_ema": dict(net.state_dict), "init_kwargs": net.config.get("init_kwargs", {}),
            "latent_avg": net.state_dict["backbone.mapping.w_avg"].clone()}


__all__ = [
    "CheckpointError", "EG3DCheckpoint", "PARTS", "PREFIXES", "StateDictMismatch", "TriPlaneNetCheckpoint",
    "config_path_for", "converted_as_eg3d_pth", "detect_v2_variant", "detect_version", "eg3d_config_from_init_kwargs",
    "encoder_part", "load_eg3d", "load_face_embedder", "load_lpips", "load_mtcnn", "load_triplanenet", "parse_eg3d",
    "parse_triplanenet", "read_converted", "read_eg3d_checkpoint", "read_torch_file", "read_triplanenet_checkpoint",
    "save_converted", "tensor_dict", "trained_model",
]
