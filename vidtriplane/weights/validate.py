"""Structure checks for weight files: the right format, and the keys and shapes our models expect.

``vidtriplane weights fetch`` and ``weights import`` refuse a file unless it has the structure of its
registry ``kind``. Each file is opened by the one loader (:func:`vidtriplane.weights.loader.load_torch`),
its layout is read by :mod:`vidtriplane.checkpoints` (the one module that knows the formats), and its
``{key: shape}`` is compared by the one shape check (:func:`vidtriplane.models.state.diff_shapes`) with
the shapes of our own models built on the ``meta`` device (no memory, no weights): exactly "would
``load_state_dict(strict=True)`` work". When the models cannot be built (a partial install), a coarse
check is used instead: entry counts and a few anchor shapes of the official checkpoint layout.

Part names are the sections of the official state_dict manifest: ``psp_encoder``, ``triplanenet_encoder``
(v1), ``triplanenet_v2_encoder_pixelshuffle``, ``triplanenet_v2_encoder_upsample``, ``eg3d_G``; plus the
MTCNN networks ``mtcnn_pnet``, ``mtcnn_rnet``, ``mtcnn_onet`` (facenet-pytorch's files, not in the manifest).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from vidtriplane import checkpoints
from vidtriplane.checkpoints import PARTS, CheckpointError, encoder_part
from vidtriplane.models.state import Shape, ShapeMap, diff_shapes, shapes_of
from vidtriplane.weights.loader import load_torch

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# part name -> expected {key: shape}, or None when unknown
Expectations = Callable[[str], "ShapeMap | None"]
V2_VARIANTS = ("triplanenet_v2_encoder_pixelshuffle", "triplanenet_v2_encoder_upsample")

# Coarse fallback: (number of state_dict entries, anchor shapes) per part of the official layout.
_COARSE: dict[str, tuple[int, dict[str, Shape]]] = {
    "psp_encoder": (565, {"input_layer.0.weight": (64, 3, 3, 3), "styles.0.linear.weight": (512, 512)}),
    "triplanenet_encoder": (441, {"input_layer.0.weight": (64, 6, 3, 3), "final_head.4.weight": (96, 96, 1, 1)}),
    "triplanenet_v2_encoder_pixelshuffle": (441, {"input_layer.0.weight": (64, 9, 3, 3),
                                                  "up2.conv.double_conv.0.weight": (384,)}),
    "triplanenet_v2_encoder_upsample": (441, {"input_layer.0.weight": (64, 9, 3, 3),
                                              "up2.conv.double_conv.0.weight": (768,)}),
    "eg3d_G": (176, {"backbone.synthesis.b4.const": (512, 4, 4), "backbone.mapping.w_avg": (512,),
                     "decoder.net.0.weight": (64, 32), "superresolution.block1.torgb.weight": (3, 128, 1, 1)}),
}
# The same for the MTCNN networks (facenet-pytorch's pnet.pt / rnet.pt / onet.pt; not in the official manifest).
_COARSE_MTCNN: dict[str, tuple[int, dict[str, Shape]]] = {
    "mtcnn_pnet": (13, {"conv1.weight": (10, 3, 3, 3), "conv4_2.weight": (4, 32, 1, 1)}),
    "mtcnn_rnet": (16, {"conv1.weight": (28, 3, 3, 3), "dense4.weight": (128, 576)}),
    "mtcnn_onet": (21, {"conv1.weight": (32, 3, 3, 3), "dense5.weight": (256, 1152), "dense6_3.weight": (10, 256)}),
}
MTCNN_PARTS = {"pnet.": "mtcnn_pnet", "rnet.": "mtcnn_rnet", "onet.": "mtcnn_onet"}

ALEXNET_SHAPES: dict[str, Shape] = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}
LPIPS_ALEX_SHAPES: dict[str, Shape] = {
    f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))
}


class InvalidWeights(CheckpointError):
    """A file that does not have the structure of its registry kind; the message lists what is wrong."""


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of a successful check."""

    kind: str
    """Registry kind that was checked."""
    summary: str
    """One line for the user (what was found)."""
    warnings: tuple[str, ...] = ()
    """Things that do not prevent loading but deserve a mention."""


# --------------------------------------------------------------------------------------------------
# Expected shapes


@functools.lru_cache(maxsize=None)
def model_shapes(part: str) -> dict[str, Shape] | None:
    """Expected {key: shape} of ``part`` from our models built on the meta device; None if unavailable."""
    import torch

    try:
        with torch.device("meta"):
            module = _build_part(part)
    except Exception as err:  # noqa: BLE001 - any failure means "no model-based oracle"; coarse check runs
        log.warning("cannot build %s for validation (%s: %s); using a coarse check", part, type(err).__name__, err)
        return None
    return None if module is None else shapes_of(module.state_dict())


def _build_part(part: str) -> "torch.nn.Module | None":
    if part == "psp_encoder":
        from vidtriplane.models.encoders import GradualStyleEncoder, PSPConfig

        return GradualStyleEncoder(PSPConfig())
    if part == "triplanenet_encoder":
        from vidtriplane.models.encoders import TriPlaneEncoder, TriPlaneEncoderConfig

        return TriPlaneEncoder(TriPlaneEncoderConfig())
    if part in V2_VARIANTS:
        from vidtriplane.models.encoders import TriPlaneEncoderConfig, TriPlaneEncoderV2

        return TriPlaneEncoderV2(TriPlaneEncoderConfig.v2(part.rsplit("_", 1)[1]))
    if part == "eg3d_G":
        from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator

        return EG3DGenerator(EG3DConfig())
    if part in MTCNN_PARTS.values():
        from vidtriplane.models import mtcnn

        return {"mtcnn_pnet": mtcnn.PNet, "mtcnn_rnet": mtcnn.RNet, "mtcnn_onet": mtcnn.ONet}[part]()
    return None


def _triplanenet_parts(version: int, variant: str) -> dict[str, str]:
    """state_dict prefix -> manifest part for a TriPlaneNet of this version / decoder variant."""
    return {prefix: encoder_part(version, variant) if part == "triplanenet_encoder" else part  # type: ignore[arg-type]
            for prefix, part in PARTS.items()}


def expected_shapes(kind: str, *, variant: str = "pixelshuffle",
                    expectations: Expectations | None = None) -> dict[str, Shape] | None:
    """The full expected {key: shape} of a registry kind's state_dict, or None when it cannot be built.

    ``triplanenet-v1``/``-v2``: the checkpoint's ``state_dict`` (v2 with the given decoder ``variant``);
    ``eg3d-pth``/``eg3d-pkl``: the generator (``G_ema``); ``alexnet``/``lpips-linear``: fixed tables;
    ``mtcnn``: the three networks under ``pnet.``, ``rnet.``, ``onet.``.
    """
    exp = expectations or model_shapes
    if kind in ("triplanenet-v1", "triplanenet-v2"):
        return _prefixed(_triplanenet_parts(int(kind[-1]), variant), exp)
    if kind in ("eg3d-pth", "eg3d-pkl"):
        shapes = exp("eg3d_G")
        return None if shapes is None else {k: tuple(v) for k, v in shapes.items()}
    if kind == "mtcnn":
        return _prefixed(MTCNN_PARTS, exp)
    return {"alexnet": ALEXNET_SHAPES, "lpips-linear": LPIPS_ALEX_SHAPES}.get(kind)


def _prefixed(parts: Mapping[str, str], exp: Expectations) -> dict[str, Shape] | None:
    """The expected shapes of several parts joined under their key prefixes; None if one is unknown."""
    out: dict[str, Shape] = {}
    for prefix, part in parts.items():
        shapes = exp(part)
        if shapes is None:
            return None
        out.update({prefix + k: tuple(v) for k, v in shapes.items()})
    return out


def compare(found: ShapeMap, part: str, expectations: Expectations) -> list[str]:
    """Problems of ``found`` against ``part``, one line each prefixed with the part ([] = fine).

    Exact keys and shapes when ``expectations`` knows the part, else the coarse count + anchor shapes."""
    expected = expectations(part)
    if expected is not None:
        return [f"{part}: {problem}" for problem in diff_shapes(found, expected).describe()]
    count, anchors = _COARSE[part] if part in _COARSE else _COARSE_MTCNN[part]
    diff = diff_shapes({k: found[k] for k in anchors if k in found}, anchors)
    counted = [] if len(found) == count else [f"{len(found)} entries (expected {count})"]
    return [f"{part}: {problem}" for problem in counted + diff.describe()]


def split_prefix(state: ShapeMap, prefix: str) -> dict[str, Shape]:
    """Entries of ``state`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _fail(problems: list[str], headline: str) -> None:
    if problems:
        raise InvalidWeights(f"{headline}:\n  " + "\n  ".join(problems))


def _parsed(parse: Callable[[Any, str], Any], obj: Any, where: str) -> Any:
    """A :mod:`vidtriplane.checkpoints` layout parser whose errors become :class:`InvalidWeights`."""
    if not isinstance(obj, Mapping):
        raise InvalidWeights(f"{where} holds a {type(obj).__name__}, expected a dict")
    try:
        return parse(obj, where)
    except CheckpointError as err:
        raise InvalidWeights(str(err)) from None


# --------------------------------------------------------------------------------------------------
# Kinds


def _check_triplanenet(obj: Any, version: int, expectations: Expectations) -> ValidationReport:
    ckpt = _parsed(checkpoints.parse_triplanenet, obj, "TriPlaneNet checkpoint")
    if ckpt.version != version:
        shape = list(ckpt.state_dict[checkpoints.INPUT_KEY].shape)
        raise InvalidWeights(f"this is a TriPlaneNet v{ckpt.version} checkpoint, not the TriPlaneNet v{version} "
                             f"file expected ({checkpoints.INPUT_KEY} has shape {shape}); import it under "
                             f"triplanenet-v{ckpt.version}")
    state = shapes_of(ckpt.state_dict)
    problems: list[str] = []
    for prefix, part in _triplanenet_parts(version, ckpt.variant).items():
        problems += compare(split_prefix(state, prefix), part, expectations)
    warnings: list[str] = []
    other = [k for k in state if not k.startswith(tuple(PARTS))]
    if other:  # the official v2 loader is non-strict: extra entries are ignored there, and by us
        (problems if version == 1 else warnings).append(
            f"keys outside psp_encoder/triplanenet_encoder/decoder: {', '.join(other[:5])}")
    if "opts" not in obj:
        warnings.append("no 'opts' entry (training options); defaults will be used")
    detail = f"TriPlaneNet v{version}" + (f" ({ckpt.variant} decoder)" if version == 2 else "")
    _fail(problems, f"{detail} checkpoint does not match the model")
    return ValidationReport(f"triplanenet-v{version}", f"{detail}: {len(state)} tensors", tuple(warnings))


def _check_eg3d_pth(obj: Any, expectations: Expectations) -> ValidationReport:
    ckpt = _parsed(checkpoints.parse_eg3d, obj, "EG3D .pth")
    check_eg3d_state(shapes_of(ckpt.state_dict), expectations, what="EG3D checkpoint's G_ema")
    return ValidationReport("eg3d-pth", f"EG3D generator: {len(ckpt.state_dict)} tensors")


def check_eg3d_state(state: ShapeMap, expectations: Expectations, *, what: str = "the pickle's G_ema") -> None:
    """Raise ``InvalidWeights`` unless ``state`` matches the EG3D generator (also used for converted .pkl)."""
    _fail(compare(state, "eg3d_G", expectations), f"{what} does not match the EG3D generator")


def _check_fixed(obj: Any, kind: str, expected: ShapeMap) -> ValidationReport:
    state = shapes_of(_parsed(checkpoints.tensor_dict, obj, "the file"))
    _fail(diff_shapes(state, expected).describe(), f"not a valid {kind} file")
    return ValidationReport(kind, f"{kind}: {len(state)} tensors")


def _check_irse(obj: Any, kind: str, expectations: Expectations) -> ValidationReport:
    """IR-SE backbones: input_layer + body + output_layer; IR-SE-50's body must match our pSp trunk."""
    state = shapes_of(_parsed(checkpoints.tensor_dict, obj, "the file"))
    problems = [f"no {prefix}* keys" for prefix in ("input_layer.", "body.", "output_layer.")
                if not any(k.startswith(prefix) for k in state)]
    if state.get("input_layer.0.weight") not in ((64, 3, 3, 3), None):
        problems.append(f"input_layer.0.weight has shape {list(state['input_layer.0.weight'])} (expected [64, 3, 3, 3])")
    psp = expectations("psp_encoder") if kind == "ir-se50" and not problems else None
    if psp is not None:
        trunk = ("input_layer.", "body.")
        problems += [f"IR-SE-50 trunk: {p}" for p in diff_shapes({k: v for k, v in state.items() if k.startswith(trunk)},
                                                                {k: v for k, v in psp.items() if k.startswith(trunk)}).describe()]
    _fail(problems, f"not a valid {kind} backbone")
    return ValidationReport(kind, f"{kind}: {len(state)} tensors")


def _check_mtcnn(obj: Any, expectations: Expectations) -> ValidationReport:
    """The three MTCNN networks in one state_dict, keys prefixed ``pnet.``, ``rnet.``, ``onet.``."""
    state = shapes_of(_parsed(checkpoints.tensor_dict, obj, "the MTCNN state_dict"))
    problems: list[str] = []
    for prefix, part in MTCNN_PARTS.items():
        problems += compare(split_prefix(state, prefix), part, expectations)
    other = [k for k in state if not k.startswith(tuple(MTCNN_PARTS))]
    if other:
        problems.append(f"keys outside pnet/rnet/onet: {', '.join(other[:5])}")
    _fail(problems, "MTCNN weights do not match the P/R/O-nets")
    return ValidationReport("mtcnn", f"MTCNN P/R/O-net: {len(state)} tensors")


def check_onnx(path: Path) -> ValidationReport:
    """A cheap ONNX sniff: a protobuf whose first field is ir_version (tag 0x08)."""
    with open(path, "rb") as f:
        head = f.read(2)
    if len(head) < 2 or head[0] != 0x08:
        raise InvalidWeights(f"{path} does not look like an ONNX model (it does not start with ir_version)")
    return ValidationReport("onnx", f"ONNX model, {Path(path).stat().st_size} bytes")


def validate_object(kind: str, obj: Any, *, expectations: Expectations | None = None) -> ValidationReport:
    """Check an already loaded torch object against ``kind``; raise ``InvalidWeights`` when it does not fit."""
    exp = expectations or model_shapes
    if kind in ("triplanenet-v1", "triplanenet-v2"):
        return _check_triplanenet(obj, int(kind[-1]), exp)
    if kind == "eg3d-pth":
        return _check_eg3d_pth(obj, exp)
    if kind in ("ir-se50", "curricularface"):
        return _check_irse(obj, kind, exp)
    if kind in ("alexnet", "lpips-linear"):
        return _check_fixed(obj, kind, expected_shapes(kind) or {})
    if kind == "mtcnn":
        return _check_mtcnn(obj, exp)
    raise ValueError(f"no object check for kind {kind!r}")


def validate_file(kind: str, path: Path, *, expectations: Expectations | None = None) -> ValidationReport:
    """Check a file on disk against ``kind`` (torch files through the one loader, ``weights_only``)."""
    if kind == "onnx":
        return check_onnx(path)
    if kind == "eg3d-pkl":
        raise ValueError("eg3d-pkl files are checked while converting (vidtriplane.weights.api.import_file)")
    return validate_object(kind, load_torch(path, kind=kind), expectations=expectations)
