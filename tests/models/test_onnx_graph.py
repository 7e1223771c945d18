"""The ONNX graph runner against onnxruntime on a small u2net-like graph (conv, pool, resize to a
tensor's shape, concat, add, sigmoid), and its refusal of unsupported operators."""
import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from vidtriplane.models.onnx_graph import OnnxGraph, UnsupportedGraph  # noqa: E402


def _graph(op_extra=None):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w1", rng.normal(0, 0.3, (4, 3, 3, 3))), ("b1", rng.normal(0, 0.1, 4)),
        ("w2", rng.normal(0, 0.3, (4, 4, 3, 3))), ("w3", rng.normal(0, 0.3, (1, 8, 1, 1))), ("b3", np.zeros(1)),
    ]]
    consts = [
        helper.make_node("Constant", [], ["i2"], value=numpy_helper.from_array(np.array(2, np.int64))),
        helper.make_node("Constant", [], ["i3"], value=numpy_helper.from_array(np.array(3, np.int64))),
        helper.make_node("Constant", [], ["s0"], value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Constant", [], ["s2"], value=numpy_helper.from_array(np.array([2], np.int64))),
        helper.make_node("Constant", [], ["roi"], value=numpy_helper.from_array(np.zeros(0, np.float32))),
        helper.make_node("Constant", [], ["scales"], value=numpy_helper.from_array(np.zeros(0, np.float32))),
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.full((1, 1, 1, 1), 0.5, np.float32))),
    ]
    nodes = consts + [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        # the resize target: (N, C) of r2 and (H, W) of r1, computed from shapes as the u2net export does
        helper.make_node("Shape", ["r1"], ["sh1"]),
        helper.make_node("Gather", ["sh1", "i2"], ["h"], axis=0),
        helper.make_node("Gather", ["sh1", "i3"], ["w"], axis=0),
        helper.make_node("Unsqueeze", ["h"], ["h1"], axes=[0]),
        helper.make_node("Unsqueeze", ["w"], ["w1d"], axes=[0]),
        helper.make_node("Concat", ["h1", "w1d"], ["hw"], axis=0),
        helper.make_node("Shape", ["r2"], ["sh2"]),
        helper.make_node("Slice", ["sh2", "s0", "s2", "s0"], ["nc"]),
        helper.make_node("Cast", ["hw"], ["hw64"], to=TensorProto.INT64),
        helper.make_node("Concat", ["nc", "hw64"], ["size"], axis=0),
        helper.make_node("Resize", ["r2", "roi", "scales", "size"], ["up"], mode="linear",
                         coordinate_transformation_mode="pytorch_half_pixel"),
        helper.make_node("Concat", ["up", "r1"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["c3"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["c3", "half"], ["a3"]),
        helper.make_node("Sigmoid", ["a3"], ["y"]),
    ] + (op_extra or [])
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 15, 17])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def test_matches_onnxruntime():
    model = _graph()
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 15, 17)).astype(np.float32)  # odd sizes: ceil pooling
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    net = OnnxGraph(model).eval()
    with torch.inference_mode():
        out = net(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape == (1, 1, 15, 17)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert ref.std() > 0.01  # not a constant map
    assert len(list(net.buffers())) == 5  # the weights, movable with .to()


def test_unsupported_operator_is_refused():
    bad = _graph([helper.make_node("Softmax", ["y"], ["z"])])
    with pytest.raises(UnsupportedGraph, match="Softmax"):
        OnnxGraph(bad)
