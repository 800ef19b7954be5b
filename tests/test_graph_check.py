"""Graph.check: nodes sorted so that each runs after what it reads (left as they are when they
already are), cycles and undefined tensors refused."""
from __future__ import annotations

import numpy as np
import pytest

from fastcnn.errors import GraphError
from fastcnn.ir.graph import Graph, Node, TensorSpec


def _graph(order):
    """x -> a (Relu) -> b (Sigmoid) -> y (Add of a and b), with w an initializer, nodes in `order`."""
    nodes = {"ra": Node("Relu", "ra", ["x"], ["a"]),
             "sb": Node("Sigmoid", "sb", ["a"], ["b"]),
             "add": Node("Add", "add", ["a", "b"], ["c"]),
             "mul": Node("Mul", "mul", ["c", "w"], ["y"])}
    return Graph("g", [TensorSpec("x", (1, 4))], [TensorSpec("y", (1, 4))],
                 [nodes[k] for k in order], {"w": np.ones(4, np.float32)})


def _valid_order(g):
    done = {"x", "w"}
    for n in g.nodes:
        assert all(x in done for x in n.inputs if x), f"{n.name} runs before an input of it"
        done.update(n.outputs)


@pytest.mark.parametrize("order", [["mul", "add", "sb", "ra"], ["sb", "ra", "mul", "add"],
                                   ["ra", "add", "sb", "mul"]])
def test_nodes_out_of_order_are_sorted(order):
    g = _graph(order).check()
    _valid_order(g)
    assert sorted(n.name for n in g.nodes) == ["add", "mul", "ra", "sb"]


def test_nodes_in_order_keep_their_order():
    g = _graph(["ra", "sb", "add", "mul"])
    nodes = list(g.nodes)
    assert g.check().nodes == nodes and all(a is b for a, b in zip(g.nodes, nodes))


@pytest.mark.parametrize("cycle", [
    [Node("Relu", "n1", ["b"], ["a"]), Node("Relu", "n2", ["a"], ["b"]), Node("Add", "n3", ["x", "a"], ["y"])],
    [Node("Add", "loop", ["x", "a"], ["a"]), Node("Relu", "r", ["a"], ["y"])],
    [Node("Relu", "r", ["x"], ["c"]), Node("Add", "n1", ["c", "e"], ["d"]), Node("Relu", "n2", ["d"], ["e"]),
     Node("Relu", "out", ["d"], ["y"])],
])
def test_a_cycle_is_refused(cycle):
    g = Graph("g", [TensorSpec("x", (1, 4))], [TensorSpec("y", (1, 4))], cycle)
    with pytest.raises(GraphError, match="cycle"):
        g.check()


def test_an_undefined_tensor_is_refused_in_or_out_of_order():
    for nodes in ([Node("Add", "add", ["x", "nowhere"], ["y"])],
                  [Node("Relu", "late", ["a"], ["y"]), Node("Add", "add", ["x", "nowhere"], ["a"])]):
        g = Graph("g", [TensorSpec("x", (1, 4))], [TensorSpec("y", (1, 4))], nodes)
        with pytest.raises(GraphError, match="reads tensor 'nowhere', which no input"):
            g.check()
