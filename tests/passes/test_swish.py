"""fuse_swish: exporters' spellings of Swish/SiLU, HardSwish and Mish become one op (and then a
Conv epilogue); the graph gives the same values before and after, and nothing is fused when an
intermediate value is needed elsewhere."""
import numpy as np
import pytest

from fastcnn.ir.graph import Graph, Node, TensorSpec
from fastcnn.model import Model
from fastcnn.passes import PIPELINE, fuse_swish, run_pipeline
from helpers import assert_close, rand
from reference import ACTIVATIONS, swish

RNG = np.random.default_rng(99)
SIXTH = np.float32(1 / 6)


def graph(nodes, inits=None, shape=(3, 5, 4, 6), outputs=("y",)):
    built = [Node(op, f"{op.lower()}{i}", list(ins), list(outs), dict(attrs))
             for i, (op, ins, outs, attrs) in enumerate(nodes)]
    return Graph("t", [TensorSpec("x", shape)], [TensorSpec(o, ()) for o in outputs], built,
                 {k: np.asarray(v) for k, v in (inits or {}).items()}, source="t").check()


def run(g, x):
    return Model(g, num_threads=1).run(None, {"x": x})


def hard_swish(x):
    return ACTIVATIONS["HardSwish"](np.asarray(x, np.float64))


def mish(x):
    return ACTIVATIONS["Mish"](np.asarray(x, np.float64))


PATTERNS = [
    ("silu", [("Sigmoid", ["x"], ["s"], {}), ("Mul", ["x", "s"], ["y"], {})], {}, "Swish", {}, swish),
    ("silu_swapped", [("Sigmoid", ["x"], ["s"], {}), ("Mul", ["s", "x"], ["y"], {})], {}, "Swish", {}, swish),
    ("swish_beta", [("Mul", ["x", "beta"], ["bx"], {}), ("Sigmoid", ["bx"], ["s"], {}), ("Mul", ["x", "s"], ["y"], {})],
     {"beta": np.float32(1.5)}, "Swish", {"alpha": 1.5}, lambda x: swish(x, 1.5)),
    ("swish_beta_first", [("Mul", ["beta", "x"], ["bx"], {}), ("Sigmoid", ["bx"], ["s"], {}), ("Mul", ["s", "x"], ["y"], {})],
     {"beta": np.array([0.75], np.float32)}, "Swish", {"alpha": 0.75}, lambda x: swish(x, 0.75)),
    ("hardswish_torch", [("HardSigmoid", ["x"], ["h"], {"alpha": float(SIXTH), "beta": 0.5}), ("Mul", ["x", "h"], ["y"], {})],
     {}, "HardSwish", {}, hard_swish),
    ("hardswish_keras", [("Add", ["x", "three"], ["a"], {}), ("Clip", ["a"], ["c"], {"min": 0.0, "max": 6.0}),
                         ("Mul", ["c", "sixth"], ["h"], {}), ("Mul", ["x", "h"], ["y"], {})],
     {"three": np.float32(3), "sixth": SIXTH}, "HardSwish", {}, hard_swish),
    ("hardswish_div", [("Add", ["three", "x"], ["a"], {}), ("Clip", ["a"], ["c"], {"min": 0.0, "max": 6.0}),
                       ("Div", ["c", "six"], ["h"], {}), ("Mul", ["h", "x"], ["y"], {})],
     {"three": np.float32(3), "six": np.float32(6)}, "HardSwish", {}, hard_swish),
    ("mish", [("Softplus", ["x"], ["sp"], {}), ("Tanh", ["sp"], ["t"], {}), ("Mul", ["x", "t"], ["y"], {})],
     {}, "Mish", {}, mish),
]


@pytest.mark.parametrize("name,nodes,inits,fused,attrs,ref", PATTERNS, ids=[p[0] for p in PATTERNS])
def test_pattern_is_fused_and_keeps_values(name, nodes, inits, fused, attrs, ref):
    g = graph(nodes, inits)
    x = rand(RNG, 3, 5, 4, 6, lo=-7, hi=7)
    before = run(g, x)[0]
    after_g = fuse_swish(g).check()
    assert [(n.op, n.inputs, n.attrs) for n in after_g.nodes] == [(fused, ["x"], attrs)]
    after = run(after_g, x)[0]
    assert_close(after, before, name)
    assert_close(after, ref(x), name)
    assert len(g.nodes) == len(nodes)      # the input graph is untouched


@pytest.mark.parametrize("nodes,inits,outputs,why", [
    ([("Sigmoid", ["x"], ["s"], {}), ("Mul", ["x", "s"], ["y"], {}), ("Add", ["s", "x"], ["z"], {})], {},
     ("y", "z"), "the sigmoid is used twice"),
    ([("Sigmoid", ["x"], ["s"], {}), ("Mul", ["x", "s"], ["y"], {})], {}, ("y", "s"), "the sigmoid is an output"),
    ([("Relu", ["x"], ["r"], {}), ("Sigmoid", ["x"], ["s"], {}), ("Mul", ["r", "s"], ["y"], {})], {},
     ("y",), "the operands differ"),
    ([("HardSigmoid", ["x"], ["h"], {}), ("Mul", ["x", "h"], ["y"], {})], {}, ("y",), "default HardSigmoid is not 1/6"),
    ([("Add", ["x", "three"], ["a"], {}), ("Clip", ["a"], ["c"], {"min": 0.0, "max": 5.0}),
      ("Mul", ["c", "sixth"], ["h"], {}), ("Mul", ["x", "h"], ["y"], {})],
     {"three": np.float32(3), "sixth": SIXTH}, ("y",), "Clip(0, 5) is not ReLU6"),
    ([("Mul", ["x", "beta"], ["bx"], {}), ("Sigmoid", ["bx"], ["s"], {}), ("Mul", ["x", "s"], ["y"], {})],
     {"beta": np.full((5, 1, 1), 1.5, np.float32)}, ("y",), "a per-channel beta is not a scalar"),
])
def test_not_fused(nodes, inits, outputs, why):
    g = graph(nodes, inits, outputs=outputs)
    after = fuse_swish(g).check()
    assert [n.op for n in after.nodes] == [n[0] for n in nodes], why
    x = rand(RNG, 3, 5, 4, 6)
    for a, b in zip(run(g, x), run(after, x)):
        assert_close(a, b)


def test_two_swishes_in_a_row():
    g = graph([("Sigmoid", ["x"], ["s1"], {}), ("Mul", ["x", "s1"], ["a"], {}),
               ("Sigmoid", ["a"], ["s2"], {}), ("Mul", ["s2", "a"], ["y"], {})])
    after = fuse_swish(g).check()
    assert [n.op for n in after.nodes] == ["Swish", "Swish"]
    x = rand(RNG, 3, 5, 4, 6, lo=-4, hi=4)
    assert_close(run(after, x)[0], swish(swish(x)))


@pytest.mark.parametrize("act_nodes,ref", [
    ([("Sigmoid", ["c"], ["s"], {}), ("Mul", ["c", "s"], ["y"], {})], swish),
    ([("HardSigmoid", ["c"], ["h"], {"alpha": float(SIXTH), "beta": 0.5}), ("Mul", ["h", "c"], ["y"], {})], hard_swish),
    ([("Softplus", ["c"], ["sp"], {}), ("Tanh", ["sp"], ["t"], {}), ("Mul", ["c", "t"], ["y"], {})], mish),
], ids=["swish", "hardswish", "mish"])
def test_pipeline_fuses_into_the_conv_epilogue(act_nodes, ref, threads):
    """Conv -> BatchNormalization -> x*sigmoid(x): one Conv with a Swish epilogue."""
    c = 5
    w, b = rand(RNG, c, c, 3, 3), rand(RNG, c)
    bn = {"bs": rand(RNG, c, lo=0.5, hi=1.5), "bb": rand(RNG, c), "bm": rand(RNG, c), "bv": rand(RNG, c, lo=0.5, hi=2)}
    nodes = [("Conv", ["x", "w", "b"], ["cv"], {"pads": [1, 1, 1, 1]}),
             ("BatchNormalization", ["cv", "bs", "bb", "bm", "bv"], ["c"], {})] + act_nodes
    g = graph(nodes, {"w": w, "b": b, **bn})
    x = rand(RNG, 3, 5, 4, 6)
    before = Model(g, num_threads=threads).run(None, {"x": x})[0]
    opt = run_pipeline(g)
    assert [n.op for n in opt.nodes] == ["Conv"]
    assert opt.nodes[0].attrs["activation"] == {"swish": "Swish", "hard_swish": "HardSwish", "mish": "Mish"}[ref.__name__]
    after = Model(opt, num_threads=threads).run(None, {"x": x})[0]
    assert_close(after, before)


def test_pipeline_order():
    names = [p.__name__ for p in PIPELINE]
    assert names.index("fold_batchnorm") < names.index("fuse_swish") < names.index("fuse_activation")
