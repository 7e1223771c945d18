"""Structure checks for weight files: right container, right keys, right shapes.

``vidtriplane weights import`` refuses a file unless it has the structure of its registry ``kind``.
The expected ``{key: shape}`` of each network part comes from our own models, built on the ``meta``
device (no memory, no weights), so the check is exactly "would ``load_state_dict(strict=True)`` work".
When the models cannot be built (a partial install), a coarse check is used instead: entry counts and a
few anchor shapes from the official checkpoint layout.

Part names (the same as the sections of the official state_dict manifest):
``psp_encoder``, ``triplanenet_encoder`` (v1), ``triplanenet_v2_encoder_pixelshuffle``,
``triplanenet_v2_encoder_upsample``, ``eg3d_G``; plus the MTCNN networks ``mtcnn_pnet``, ``mtcnn_rnet``,
``mtcnn_onet``.
"""
from __future__ import annotations

import functools
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import torch

Shape = tuple[int, ...]
ShapeMap = Mapping[str, Shape]
# part name -> expected {key: shape}, or None when unknown
Expectations = Callable[[str], "ShapeMap | None"]

V1_PARTS = {"psp_encoder.": "psp_encoder", "triplanenet_encoder.": "triplanenet_encoder", "decoder.": "eg3d_G"}
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


class InvalidWeights(ValueError):
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
        print(f"note: cannot build {part} for validation ({type(err).__name__}: {err}); using a coarse check",
              file=sys.stderr)
        return None
    if module is None:
        return None
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


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


def expected_shapes(kind: str, *, variant: str = "pixelshuffle",
                    expectations: Expectations | None = None) -> dict[str, Shape] | None:
    """The full expected {key: shape} of a registry kind's state_dict, or None when it cannot be built.

    ``triplanenet-v1``/``-v2``: the checkpoint's ``state_dict`` (v2 with the given decoder ``variant``);
    ``eg3d-pth``/``eg3d-pkl``: the generator (``G_ema``); ``alexnet``/``lpips-linear``: fixed tables.
    """
    exp = expectations or model_shapes
    if kind in ("triplanenet-v1", "triplanenet-v2"):
        encoder = "triplanenet_encoder" if kind == "triplanenet-v1" else f"triplanenet_v2_encoder_{variant}"
        return _prefixed({"psp_encoder.": "psp_encoder", "triplanenet_encoder.": encoder, "decoder.": "eg3d_G"}, exp)
    if kind in ("eg3d-pth", "eg3d-pkl"):
        shapes = exp("eg3d_G")
        return None if shapes is None else {k: tuple(v) for k, v in shapes.items()}
    if kind == "alexnet":
        return dict(ALEXNET_SHAPES)
    if kind == "lpips-linear":
        return dict(LPIPS_ALEX_SHAPES)
    if kind == "mtcnn":
        return _prefixed(MTCNN_PARTS, exp)
    return None


def _prefixed(parts: Mapping[str, str], exp: Expectations) -> dict[str, Shape] | None:
    """The expected shapes of several parts joined under their key prefixes; None if one is unknown."""
    out: dict[str, Shape] = {}
    for prefix, part in parts.items():
        shapes = exp(part)
        if shapes is None:
            return None
        out.update({prefix + k: tuple(v) for k, v in shapes.items()})
    return out


def shapes_of(state: Mapping[str, Any]) -> dict[str, Shape]:
    """{key: shape} of a state_dict (tensors, or anything with ``.shape``)."""
    return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}


def compare(found: ShapeMap, part: str, expectations: Expectations) -> list[str]:
    """Problems of ``found`` against ``part``: missing/unexpected keys and wrong shapes ([] = fine)."""
    expected = expectations(part)
    problems: list[str] = []
    if expected is not None:
        missing = [k for k in expected if k not in found]
        extra = [k for k in found if k not in expected]
        wrong = [f"{k}: {list(found[k])} (expected {list(expected[k])})" for k in expected
                 if k in found and tuple(found[k]) != tuple(expected[k])]
        for label, items in (("missing keys", missing), ("unexpected keys", extra), ("wrong shapes", wrong)):
            if items:
                shown = ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
                problems.append(f"{part}: {label}: {shown}")
        return problems
    count, anchors = {**_COARSE, **_COARSE_MTCNN}[part]
    if len(found) != count:
        problems.append(f"{part}: {len(found)} entries (expected {count})")
    for key, shape in anchors.items():
        if key not in found:
            problems.append(f"{part}: missing key {key}")
        elif tuple(found[key]) != shape:
            problems.append(f"{part}: {key} has shape {list(found[key])} (expected {list(shape)})")
    return problems


def split_prefix(state: ShapeMap, prefix: str) -> dict[str, Shape]:
    """Entries of ``state`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------------------------------
# Loading


def is_nvidia_pickle(path: Path) -> bool:
    """Whether ``path`` looks like a plain pickle using NVIDIA's persistence module (cheap sniff)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return head[:1] == b"\x80" and b"torch_utils.persistence" in head


def load_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with errors that say what the file is."""
    path = Path(path)
    if not zipfile.is_zipfile(path) and is_nvidia_pickle(path):
        raise InvalidWeights(f"{path} is an NVIDIA network pickle (.pkl), not a torch .pth file; "
                             "import it as eg3d-ffhq512-128-pkl")
    from vidtriplane.checkpoints import torch_load_weights_only

    try:
        return torch_load_weights_only(path, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise InvalidWeights(f"{path} holds pickled objects other than tensors and plain containers "
                                 f"({found.group(1)}), so it was not loaded (torch.load weights_only=True); "
                                 "re-save it as a plain state_dict") from None
        raise InvalidWeights(f"{path} is not a readable torch file (neither a torch.save zip archive nor a "
                             "legacy torch pickle); was the download an error page?") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise InvalidWeights(f"{path} is not a readable torch file ({type(err).__name__}: {err})") from None


def _require_state_dict(obj: Any, what: str) -> Mapping[str, Any]:
    import torch

    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) for k in obj):
        raise InvalidWeights(f"{what} is not a state_dict (a mapping of names to tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InvalidWeights(f"{what} holds no tensors")
    return obj


# --------------------------------------------------------------------------------------------------
# Kinds


def _check_triplanenet(obj: Any, version: int, expectations: Expectations) -> ValidationReport:
    if not isinstance(obj, Mapping) or "state_dict" not in obj:
        keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise InvalidWeights(f"not a TriPlaneNet checkpoint: expected a dict with 'state_dict' and 'opts', found {keys}")
    state = shapes_of(_require_state_dict(obj["state_dict"], "checkpoint['state_dict']"))
    problems: list[str] = []
    warnings: list[str] = []
    problems += compare(split_prefix(state, "psp_encoder."), "psp_encoder", expectations)
    problems += compare(split_prefix(state, "decoder."), "eg3d_G", expectations)
    encoder = split_prefix(state, "triplanenet_encoder.")
    if version == 1:
        problems += compare(encoder, "triplanenet_encoder", expectations)
        detail = "TriPlaneNet v1"
    else:
        attempts = {part: compare(encoder, part, expectations) for part in V2_VARIANTS}
        ok = [part for part, issues in attempts.items() if not issues]
        if ok:
            detail = f"TriPlaneNet v2 ({ok[0].rsplit('_', 1)[1]} decoder)"
        else:
            best = min(attempts, key=lambda p: len(attempts[p]))
            problems += attempts[best]
            detail = "TriPlaneNet v2"
    other = [k for k in state if not k.startswith(tuple(V1_PARTS))]
    if other:
        (problems if version == 1 else warnings).append(
            f"keys outside psp_encoder/triplanenet_encoder/decoder: {', '.join(other[:5])}")
    if "opts" not in obj:
        warnings.append("no 'opts' entry (training options); defaults will be used")
    if problems:
        raise InvalidWeights(f"{detail} checkpoint does not match the model:\n  " + "\n  ".join(problems))
    return ValidationReport(f"triplanenet-v{version}", f"{detail}: {len(state)} tensors", tuple(warnings))


def _check_eg3d_pth(obj: Any, expectations: Expectations) -> ValidationReport:
    if not isinstance(obj, Mapping) or "G_ema" not in obj:
        keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise InvalidWeights(f"not an EG3D .pth: expected a dict with 'G_ema', 'init_kwargs', 'latent_avg', found {keys}")
    state = shapes_of(_require_state_dict(obj["G_ema"], "checkpoint['G_ema']"))
    problems = compare(state, "eg3d_G", expectations)
    import torch

    latent = obj.get("latent_avg")
    warnings = []
    if latent is None:
        warnings.append("no 'latent_avg'; backbone.mapping.w_avg will be used")
    elif not isinstance(latent, torch.Tensor) or tuple(latent.shape) not in ((512,), (1, 512)):
        problems.append(f"latent_avg has shape {getattr(latent, 'shape', type(latent).__name__)} (expected [512])")
    if not isinstance(obj.get("init_kwargs"), Mapping):
        warnings.append("no 'init_kwargs'; the FFHQ-512 defaults will be used")
    if problems:
        raise InvalidWeights("EG3D checkpoint does not match the generator:\n  " + "\n  ".join(problems))
    return ValidationReport("eg3d-pth", f"EG3D generator: {len(state)} tensors", tuple(warnings))


def check_eg3d_state(state: ShapeMap, expectations: Expectations) -> None:
    """Raise ``InvalidWeights`` unless ``state`` matches the EG3D generator (used for converted .pkl)."""
    problems = compare(state, "eg3d_G", expectations)
    if problems:
        raise InvalidWeights("the pickle's G_ema does not match the EG3D generator:\n  " + "\n  ".join(problems))


def _check_fixed(obj: Any, kind: str, expected: ShapeMap, *, allow_extra: bool = False) -> ValidationReport:
    state = shapes_of(_require_state_dict(obj, "the file"))
    problems = [f"missing key {k}" for k in expected if k not in state]
    problems += [f"{k} has shape {list(state[k])} (expected {list(v)})" for k, v in expected.items()
                 if k in state and state[k] != tuple(v)]
    if not allow_extra:
        problems += [f"unexpected key {k}" for k in state if k not in expected]
    if problems:
        raise InvalidWeights(f"not a valid {kind} file:\n  " + "\n  ".join(problems[:10]))
    return ValidationReport(kind, f"{kind}: {len(state)} tensors")


def _check_irse(obj: Any, kind: str, expectations: Expectations) -> ValidationReport:
    """IR-SE backbones: input_layer + body + output_layer; IR-SE-50's body must match our pSp trunk."""
    state = shapes_of(_require_state_dict(obj, "the file"))
    problems = []
    for prefix in ("input_layer.", "body.", "output_layer."):
        if not any(k.startswith(prefix) for k in state):
            problems.append(f"no {prefix}* keys")
    if state.get("input_layer.0.weight") not in ((64, 3, 3, 3), None):
        problems.append(f"input_layer.0.weight has shape {list(state['input_layer.0.weight'])} (expected [64, 3, 3, 3])")
    if kind == "ir-se50" and not problems:
        psp = expectations("psp_encoder")
        if psp is not None:
            trunk = {k: v for k, v in psp.items() if k.startswith(("input_layer.", "body."))}
            trunk_found = {k: v for k, v in state.items() if k.startswith(("input_layer.", "body."))}
            problems += [p.replace("psp_encoder", "IR-SE-50 trunk")
                         for p in compare(trunk_found, "psp_encoder", lambda _: trunk)]
    if problems:
        raise InvalidWeights(f"not a valid {kind} backbone:\n  " + "\n  ".join(problems))
    return ValidationReport(kind, f"{kind}: {len(state)} tensors")


def _check_mtcnn(obj: Any, expectations: Expectations) -> ValidationReport:
    """The three MTCNN networks in one state_dict, keys prefixed ``pnet.``, ``rnet.``, ``onet.``."""
    state = shapes_of(_require_state_dict(obj, "the MTCNN state_dict"))
    problems: list[str] = []
    for prefix, part in MTCNN_PARTS.items():
        problems += compare(split_prefix(state, prefix), part, expectations)
    other = [k for k in state if not k.startswith(tuple(MTCNN_PARTS))]
    if other:
        problems.append(f"keys outside pnet/rnet/onet: {', '.join(other[:5])}")
    if problems:
        raise InvalidWeights("MTCNN weights do not match the P/R/O-nets:\n  " + "\n  ".join(problems))
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
    if kind == "triplanenet-v1":
        return _check_triplanenet(obj, 1, exp)
    if kind == "triplanenet-v2":
        return _check_triplanenet(obj, 2, exp)
    if kind == "eg3d-pth":
        return _check_eg3d_pth(obj, exp)
    if kind in ("ir-se50", "curricularface"):
        return _check_irse(obj, kind, exp)
    if kind == "alexnet":
        return _check_fixed(obj, kind, ALEXNET_SHAPES)
    if kind == "lpips-linear":
        return _check_fixed(obj, kind, LPIPS_ALEX_SHAPES)
    if kind == "mtcnn":
        return _check_mtcnn(obj, exp)
    raise ValueError(f"no object check for kind {kind!r}")


def validate_file(kind: str, path: Path, *, expectations: Expectations | None = None) -> ValidationReport:
    """Check a file on disk against ``kind`` (torch files through ``weights_only`` loading)."""
    if kind == "onnx":
        return check_onnx(path)
    if kind == "eg3d-pkl":
        raise ValueError("eg3d-pkl files are checked while converting (vidtriplane.weights.api.import_file)")
    obj = load_torch_file(path)
    return validate_object(kind, obj, expectations=expectations)
