"""A small ONNX graph run by PyTorch: the operator subset of convolutional segmentation networks.

Built once from an already parsed ``onnx.ModelProto`` (this module never reads files), it executes the
graph's nodes in order with ``torch.nn.functional``; the weights become buffers, so ``.to(device)`` and
``.half()`` work as for any module. Shape arithmetic (``Shape``, ``Gather``, ``Slice`` ... feeding a
``Resize``'s target size) runs on small numpy arrays, as onnxruntime does on the host.

Supported: Conv, Relu, Sigmoid, Add, Concat, MaxPool, Resize (nearest / linear), Constant, Shape, Gather,
Unsqueeze, Slice, Cast; anything else is refused when the module is built (:class:`UnsupportedGraph`).
This covers rembg's u2net family (exported from PyTorch with opset 11, batch norm folded into the convs).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

SUPPORTED = ("Conv", "Relu", "Sigmoid", "Add", "Concat", "MaxPool", "Resize", "Constant", "Shape", "Gather",
             "Unsqueeze", "Slice", "Cast")


class UnsupportedGraph(ValueError):
    """The ONNX graph uses an operator or attribute this runner does not implement."""


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper, numpy_helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if a.type == a.TENSOR:
            value = numpy_helper.to_array(value)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def _is_shape(value: Any) -> bool:
    return isinstance(value, np.ndarray)


def _conv(a: dict) -> Callable:
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise UnsupportedGraph(f"Conv with asymmetric pads {pads}")
    stride, dilation, groups = tuple(a.get("strides", [1, 1])), tuple(a.get("dilations", [1, 1])), a.get("group", 1)
    return lambda x, w, b=None: F.conv2d(x, w, b, stride, tuple(pads[:2]), dilation, groups)


def _maxpool(a: dict) -> Callable:
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise UnsupportedGraph(f"MaxPool with asymmetric pads {pads}")
    kernel, stride, ceil = tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"])), bool(a.get("ceil_mode", 0))
    return lambda x: F.max_pool2d(x, kernel, stride, tuple(pads[:2]), ceil_mode=ceil)


def _resize(a: dict) -> Callable:
    mode = a.get("mode", "nearest")
    coords = a.get("coordinate_transformation_mode", "half_pixel")
    if mode == "linear" and coords in ("pytorch_half_pixel", "half_pixel"):
        kwargs = {"mode": "bilinear", "align_corners": False}
    elif mode == "linear" and coords == "align_corners":
        kwargs = {"mode": "bilinear", "align_corners": True}
    elif mode == "nearest" and coords == "asymmetric":
        kwargs = {"mode": "nearest"}
    else:
        raise UnsupportedGraph(f"Resize mode={mode!r} coordinate_transformation_mode={coords!r}")

    def run(x, roi=None, scales=None, sizes=None):
        if sizes is not None and len(sizes):
            return F.interpolate(x, size=[int(s) for s in sizes[2:]], **kwargs)
        return F.interpolate(x, scale_factor=[float(s) for s in scales[2:]], **kwargs)

    return run


def _concat(a: dict) -> Callable:
    axis = a["axis"]
    return lambda *xs: np.concatenate(xs, axis) if all(map(_is_shape, xs)) else torch.cat(xs, axis)


def _slice(data, starts, ends, axes=None, steps=None):
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[int(ax)] = slice(int(s), int(min(e, np.iinfo(np.int64).max)), int(st))
    return data[tuple(index)]


def _add(x, y):
    if isinstance(x, torch.Tensor) and not isinstance(y, torch.Tensor):
        y = torch.tensor(y, dtype=x.dtype, device=x.device)
    elif isinstance(y, torch.Tensor) and not isinstance(x, torch.Tensor):
        x = torch.tensor(x, dtype=y.dtype, device=y.device)
    return x + y


def _op(node: Any) -> Callable:
    """The function of one node; its arguments are the node's inputs in order."""
    a = _attrs(node)
    op = node.op_type
    if op == "Conv":
        return _conv(a)
    if op == "MaxPool":
        return _maxpool(a)
    if op == "Resize":
        return _resize(a)
    if op == "Concat":
        return _concat(a)
    if op == "Relu":
        return F.relu
    if op == "Sigmoid":
        return torch.sigmoid
    if op == "Add":
        return _add
    if op == "Constant":
        value = a["value"]
        return lambda: value
    if op == "Shape":
        return lambda x: np.array(x.shape, dtype=np.int64)
    if op == "Gather":
        axis = a.get("axis", 0)
        return lambda x, i: np.take(x, i, axis=axis)
    if op == "Unsqueeze":
        axes = a["axes"]
        return lambda x: np.expand_dims(x, tuple(axes))
    if op == "Slice":
        return _slice
    if op == "Cast":
        from onnx import helper

        dtype = helper.tensor_dtype_to_np_dtype(a["to"])
        return lambda x: x.astype(dtype)
    raise UnsupportedGraph(f"operator {op!r} is not supported (supported: {', '.join(SUPPORTED)})")


class OnnxGraph(torch.nn.Module):
    """``forward(x) -> first graph output`` for a parsed ONNX model with one input."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        super().__init__()
        graph = model.graph
        self._names: dict[str, str] = {}
        for i, init in enumerate(graph.initializer):
            key = f"w{i}"
            self.register_buffer(key, torch.from_numpy(numpy_helper.to_array(init).copy()))
            self._names[init.name] = key
        inputs = [v.name for v in graph.input if v.name not in self._names]
        if len(inputs) != 1:
            raise UnsupportedGraph(f"expected one input, the graph has {inputs}")
        self.input_name = inputs[0]
        self.output_name = graph.output[0].name
        self._nodes = [(_op(n), list(n.input), list(n.output)) for n in graph.node]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, Any] = {self.input_name: x, "": None}
        buffers = dict(self.named_buffers())
        for key_name, key in self._names.items():
            values[key_name] = buffers[key]
        for fn, ins, outs in self._nodes:
            args = [values[i] for i in ins]
            while args and args[-1] is None:  # trailing optional inputs left empty
                args.pop()
            values[outs[0]] = fn(*args)
        return values[self.output_name]
