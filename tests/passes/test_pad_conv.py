"""fold_pad_into_window: a zero Pad of the spatial axes read only by a Conv (or an AveragePool
counting the padding) becomes the window's padding; values equal before and after, and every
Pad that is not a zero spatial pad stays."""
import numpy as np
import pytest

from fastcnn.ir.graph import Graph, Node, TensorSpec
from fastcnn.model import Model
from fastcnn.passes import fold_pad_into_window, run_pipeline
from helpers import assert_close, rand

RNG = np.random.default_rng(11)


def graph(pad_inputs, window, shape=(None, 3, 9, 8), pad_attrs=None, extra_reader=False):
    """x -> Relu -> Pad -> window (-> y); inputs of Pad after the data: names of `inits`."""
    nodes = [Node("Relu", "relu", ["x"], ["r"], {}),
             Node("Pad", "pad", ["r"] + pad_inputs[0], ["p"], dict(pad_attrs or {})), window]
    outputs = [TensorSpec("y", ())]
    if extra_reader:
        nodes.append(Node("Neg", "neg", ["p"], ["z"], {}))
        outputs.append(TensorSpec("z", ()))
    inits = dict(pad_inputs[1])
    if window.op == "Conv":
        groups = window.attrs.get("group", 1)
        inits["w"] = rand(RNG, 6, shape[1] // groups, *([3] * (len(shape) - 2)))
        inits["b"] = rand(RNG, 6)
    return Graph("t", [TensorSpec("x", shape)], outputs, nodes, inits, source="t").check()


def conv(**attrs):
    return Node("Conv", "conv", ["p", "w", "b"], ["y"], attrs)


def pads(values, value=None, axes=None):
    names, inits = ["pads"], {"pads": np.asarray(values, np.int64)}
    if value is not None or axes is not None:
        names.append("value" if value is not None else "")
        if value is not None:
            inits["value"] = np.asarray(value, np.float32)
    if axes is not None:
        names.append("axes")
        inits["axes"] = np.asarray(axes, np.int64)
    return names, inits


def run(g, x):
    return Model(g, num_threads=1).run(None, {"x": x})


@pytest.mark.parametrize("pad,window,shape", [
    (pads([0, 0, 0, 0, 0, 0, 1, 1]), conv(strides=[2, 2]), (None, 3, 9, 8)),       # TF 'same', stride 2
    (pads([0, 0, 2, 1, 0, 0, 0, 3]), conv(pads=[1, 0, 1, 1], dilations=[2, 1]), (2, 3, 9, 8)),
    (pads([0, 0, 1, 1, 0, 0, 1, 1], value=0.0), conv(auto_pad="VALID", group=3), (None, 3, 9, 8)),
    (pads([1, 2, 1, 0], axes=[2, 3]), conv(strides=[1, 2]), (None, 3, 9, 8)),
    (pads([0, 0, 2, 0, 0, 1]), conv(), (None, 3, 11)),                               # 1-D
    (pads([0, 0, 1, 1, 0, 0, 1, 2]),
     Node("AveragePool", "pool", ["p"], ["y"], {"kernel_shape": [3, 3], "strides": [2, 2], "count_include_pad": 1}),
     (None, 3, 9, 8)),
])
def test_zero_spatial_pad_is_folded(pad, window, shape):
    g = graph(pad, window, shape)
    out = fold_pad_into_window(g)
    assert "Pad" not in [n.op for n in out.nodes]
    assert [n.op for n in g.nodes].count("Pad") == 1          # the input graph is not modified
    x = rand(RNG, 2 if shape[0] is None else shape[0], *shape[1:], lo=-1, hi=2)
    before = run(g, x)[0]
    assert_close(run(out.check(), x)[0], before)
    assert_close(run(run_pipeline(g), x)[0], before)


@pytest.mark.parametrize("case", ["value 1", "reflect", "channels", "negative", "same_upper", "two readers",
                                  "pool without the padding", "max pool"])
def test_other_pads_stay(case):
    pad, window, attrs, extra = pads([0, 0, 1, 1, 0, 0, 1, 1]), conv(), None, False
    if case == "value 1":
        pad = pads([0, 0, 1, 1, 0, 0, 1, 1], value=1.0)
    elif case == "reflect":
        attrs = {"mode": "reflect"}
    elif case == "channels":
        pad = pads([0, 1, 1, 1, 0, 0, 1, 1])
        window = Node("AveragePool", "pool", ["p"], ["y"], {"kernel_shape": [2, 2], "count_include_pad": 1})
    elif case == "negative":
        pad = pads([0, 0, -1, 1, 0, 0, 1, 1])
    elif case == "same_upper":
        window = conv(auto_pad="SAME_UPPER")
    elif case == "two readers":
        extra = True
    elif case == "pool without the padding":
        window = Node("AveragePool", "pool", ["p"], ["y"], {"kernel_shape": [2, 2], "count_include_pad": 0})
    elif case == "max pool":
        window = Node("MaxPool", "pool", ["p"], ["y"], {"kernel_shape": [2, 2]})
    g = graph(pad, window, pad_attrs=attrs, extra_reader=extra)
    assert fold_pad_into_window(g) is g
