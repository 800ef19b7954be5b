"""spatial_mean_to_pool: ReduceMean over the axes after the channels (the dynamo exporter's
AdaptiveAvgPool2d(1) and x.mean((2, 3))) becomes GlobalAveragePool (+ Flatten without keepdims);
values equal before and after, other reductions left alone."""
import numpy as np
import pytest

from fastcnn.ir.graph import Graph, Node, TensorSpec
from fastcnn.model import Model
from fastcnn.passes import run_pipeline, spatial_mean_to_pool
from helpers import assert_close, rand

RNG = np.random.default_rng(7)


def graph(axes, keepdims, shape):
    nodes = [Node("Relu", "relu", ["x"], ["r"], {}),
             Node("ReduceMean", "mean", ["r", "axes"], ["y"], {"keepdims": keepdims})]
    return Graph("t", [TensorSpec("x", shape)], [TensorSpec("y", ())], nodes,
                 {"axes": np.asarray(axes, np.int64)}, source="t").check()


def run(g, x):
    return Model(g, num_threads=1).run(None, {"x": x})[0]


@pytest.mark.parametrize("axes,keepdims,shape", [
    ([2, 3], 1, (None, 5, 4, 6)), ([-1, -2], 0, (None, 5, 4, 6)), ([3, 2], 0, (2, 3, 7, 1)),
    ([2], 1, (None, 4, 9)), ([-1], 0, (None, 4, 9))])
def test_spatial_mean_becomes_a_global_pool(axes, keepdims, shape):
    g = graph(axes, keepdims, shape)
    out = spatial_mean_to_pool(g)
    assert [n.op for n in out.nodes] == ["Relu", "GlobalAveragePool"] + ([] if keepdims else ["Flatten"])
    assert out.outputs[0].name == "y"
    x = rand(RNG, 3 if shape[0] is None else shape[0], *shape[1:], lo=-2, hi=2)
    want = np.maximum(x, 0).mean(axis=tuple(a % len(shape) for a in axes), keepdims=bool(keepdims))
    assert_close(run(out.check(), x), want)
    assert_close(run(g, x), want)
    assert_close(run(run_pipeline(g), x), want)


@pytest.mark.parametrize("axes,shape", [([1, 2, 3], (None, 5, 4, 6)), ([2], (None, 5, 4, 6)),
                                        ([1], (None, 5, 4)), ([2, 3, 4], (None, 2, 3, 4, 5))])
def test_other_means_are_left(axes, shape):
    g = graph(axes, 1, shape)
    assert spatial_mean_to_pool(g) is g


def test_the_pooled_name_does_not_collide():
    g = graph([2, 3], 0, (None, 5, 4, 6))
    g.nodes[0].outputs = ["y/pooled"]
    g.nodes[1].inputs = ["y/pooled", "axes"]
    out = spatial_mean_to_pool(g.check()).check()
    x = rand(RNG, 2, 5, 4, 6)
    assert_close(run(out, x), np.maximum(x, 0).mean(axis=(2, 3)))
