"""Matting runners: one network (rembg's u2net family, ``u2netp`` by default), three ways to run it.

The model file is found by :func:`vidtriplane.stages.matting.load_session` (rembg's search, or the weight
store); this module only decides how it runs. Every runner maps crops [N, S, S, 3] uint8 to alpha
[N, S, S] float32 in [0, 1] (``runner.alphas(crops)``):

* ``onnxruntime``: the ONNX file with onnxruntime, batched (the batch axis is made dynamic), on the CUDA
  provider when onnxruntime-gpu has it, else on the CPU with ``intra_op_num_threads`` = the cores and
  sequential execution.
* ``torch``: the same graph converted once to PyTorch (:class:`vidtriplane.models.onnx_graph.OnnxGraph`),
  batched on the device, channels-last, with ``precision`` fp32, bf16 (CPUs with AMX / AVX-512 BF16:
  about 3x faster than fp32) or fp16 (CUDA).
* ``rembg``: rembg's ``session.predict``, one PIL image at a time (the reference; slowest).

The first two share this module's pre/post-processing, which is rembg's (``rembg/sessions/base.py:
normalize``, ``u2netp.py: predict``) for a whole batch: Lanczos resize to 320 x 320 (PIL, as rembg: the
network's output depends visibly on that filter, OpenCV's area filter moved the alpha by up to 0.33 at
edges), divide by the image's maximum, normalise with the ImageNet mean / std; take the first output's
sigmoid map, stretch it to [0, 1] by its min and max, round to 8 bits, Lanczos resize back. The resizes
cost a few ms a crop on the CPU, against 100+ ms for the network there.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Protocol

import numpy as np

from vidtriplane.config.preprocess import MattingConfig
from vidtriplane.stages import matting

log = logging.getLogger(__name__)

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
NET_SIZE = 320
"""Input side of rembg's u2net-family models."""


class MattingRunner(Protocol):
    """Crops [N, S, S, 3] uint8 -> alpha [N, S, S] float32 in [0, 1]."""

    name: str

    def alphas(self, crops: np.ndarray) -> np.ndarray: ...


def to_input(crops: np.ndarray, size: int = NET_SIZE) -> np.ndarray:
    """Crops [N, H, W, 3] uint8 -> network input [N, 3, size, size] float32 (rembg's normalisation)."""
    from PIL import Image

    out = np.empty((len(crops), size, size, 3), np.float32)
    for i, crop in enumerate(crops):
        small = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS), np.float32)
        out[i] = small / max(float(small.max()), 1e-6)
    out -= MEAN
    out /= STD
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def to_alpha(pred: np.ndarray, height: int, width: int) -> np.ndarray:
    """The network's first output [N, 1, s, s] -> alpha [N, height, width] float32 (per-image min-max, 8 bits)."""
    from PIL import Image

    pred = np.asarray(pred, np.float32)[:, 0]
    lo = pred.min(axis=(1, 2), keepdims=True)
    hi = pred.max(axis=(1, 2), keepdims=True)
    mask = ((pred - lo) / np.maximum(hi - lo, 1e-12) * 255).astype(np.uint8)
    out = np.empty((len(pred), height, width), np.float32)
    for i, m in enumerate(mask):
        out[i] = np.asarray(Image.fromarray(m).resize((width, height), Image.Resampling.LANCZOS), np.float32)
    return out / 255.0


def model_source(session: Any) -> str | bytes:
    """The ONNX model (path or bytes) behind a loaded rembg session."""
    inner = getattr(session, "inner_session", session)
    source = getattr(inner, "_model_path", None) or getattr(inner, "_model_bytes", None)
    if source is None:
        raise RuntimeError("cannot tell which ONNX file the matting session was loaded from; use matting.backend=rembg")
    return source


def _parse(source: str | bytes):
    try:
        import onnx
    except ImportError:
        raise RuntimeError("matting.backend=torch (and batched onnxruntime) need the onnx package: "
                           "pip install onnx") from None
    return onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)


def _batched(crops: np.ndarray, size: int, run) -> np.ndarray:
    if len(crops) == 0:
        return np.zeros(crops.shape[:3], np.float32)
    h, w = crops.shape[1:3]
    parts = [to_alpha(run(to_input(crops[i:i + size])), h, w) for i in range(0, len(crops), size)]
    return np.concatenate(parts)


class RembgRunner:
    """rembg's own ``session.predict`` per image (PIL resizes, 8-bit mask)."""

    name = "rembg"

    def __init__(self, session: Any) -> None:
        self.session = session

    def alphas(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros(crops.shape[:3], np.float32)
        return np.stack([matting.alpha_of(c, self.session) for c in crops])


class OnnxRunner:
    """onnxruntime with a dynamic batch axis; CUDA provider when available, else tuned CPU threads."""

    name = "onnxruntime"

    def __init__(self, source: str | bytes, cfg: MattingConfig) -> None:
        import onnxruntime as ort

        model = _parse(source)
        for value in list(model.graph.input) + list(model.graph.output):
            dim = value.type.tensor_type.shape.dim[0]
            dim.ClearField("dim_value")
            dim.dim_param = "batch"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cfg.threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if cfg.device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name
        self.batch_size = batch_size(cfg, self.device)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.input: x})[0]

    def alphas(self, crops: np.ndarray) -> np.ndarray:
        return _batched(crops, self.batch_size, self.run)


class TorchRunner:
    """The ONNX graph converted to PyTorch, batched on the device in the configured precision."""

    name = "torch"

    def __init__(self, source: str | bytes, cfg: MattingConfig) -> None:
        import torch

        from vidtriplane.models.onnx_graph import OnnxGraph

        self.device = torch.device(resolve_device(cfg.device))
        self.precision = resolve_precision(cfg.precision, self.device.type)
        if self.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("matting.precision=fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        net = OnnxGraph(_parse(source)).eval().requires_grad_(False)
        self.net = net.to(self.device, memory_format=torch.channels_last)
        self.batch_size = batch_size(cfg, self.device.type)

    def run(self, x: np.ndarray) -> np.ndarray:
        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            xt = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
            return self.net(xt).float().cpu().numpy()

    def alphas(self, crops: np.ndarray) -> np.ndarray:
        return _batched(crops, self.batch_size, self.run)


def batch_size(cfg: MattingConfig, device: str) -> int:
    """``matting.batch_size``, or 16 on CUDA and 1 on the CPU."""
    return cfg.batch_size or (16 if device == "cuda" else 1)


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively here (AVX-512 BF16 or AMX)."""
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def resolve_precision(precision: str, device_type: str) -> str:
    """'auto' -> fp16 on CUDA, bf16 on CPUs that run it natively, else fp32."""
    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def resolve_backend(cfg: MattingConfig) -> str:
    """'auto' -> torch on a GPU or a bf16-capable CPU, else onnxruntime; rembg without the onnx package."""
    if cfg.backend != "auto":
        return cfg.backend
    try:
        import onnx  # noqa: F401  (both batched runners read the graph with it)
    except ImportError:
        log.warning("matting: the onnx package is missing, so matting runs through rembg one crop at a time "
                    "(pip install onnx for the batched runners)")
        return "rembg"
    device = resolve_device(cfg.device)
    if device == "cuda" or (cfg.precision in ("auto", "bf16") and cpu_has_bf16()):
        return "torch"
    return "onnxruntime"


def load_runner(cfg: MattingConfig) -> MattingRunner:
    """The configured runner, its model file found by :func:`vidtriplane.stages.matting.load_session`."""
    session = matting.load_session(cfg)
    backend = resolve_backend(cfg)
    if backend == "rembg":
        runner: MattingRunner = RembgRunner(session)
    elif backend == "onnxruntime":
        runner = OnnxRunner(model_source(session), cfg)
    elif backend == "torch":
        runner = TorchRunner(model_source(session), cfg)
    else:
        raise ValueError(f"matting.backend must be auto, onnxruntime, torch or rembg, got {backend!r}")
    log.info("matting: %s with %s", cfg.model, backend)
    return runner
