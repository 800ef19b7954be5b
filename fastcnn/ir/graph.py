"""Graph, Node and tensor descriptions.

The IR follows ONNX semantics (operator names, attribute names and meanings, NCHW layout) because
that is what most importers start from and what users read in error messages. fastcnn-only
operators (MinPool, Maxout, StochasticPool, fused epilogues on Conv/Gemm) use the same conventions.

Every attribute value is plain JSON data (int, float, str or a list of them): tensors that ONNX
stores as attributes (Constant's value) become initializers, so a graph serializes without pickle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import numpy as np

from fastcnn.errors import GraphError

# Element types a tensor may have in the IR. Kernels compute in float32; the other types only
# appear in constant data and in shape arithmetic that is folded while planning.
DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
# dtype name <-> numpy dtype without numpy's Python-level `dtype.name` (several us a call: it
# was a tenth of a small model's load time, once per tensor per inference)
ITEMSIZE = {name: np.dtype(name).itemsize for name in DTYPES}
_DTYPE_NAMES = {np.dtype(name): name for name in DTYPES}


def dtype_name(dtype: np.dtype) -> str:
    """numpy dtype -> its name ('float32', ...), fast for the IR's DTYPES."""
    name = _DTYPE_NAMES.get(dtype)
    return name if name is not None else dtype.name


class ValueType(NamedTuple):
    """Concrete type of one tensor during inference: a shape of ints and a dtype name."""

    shape: tuple
    dtype: str

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        item = ITEMSIZE.get(self.dtype)
        return self.size * (item if item is not None else np.dtype(self.dtype).itemsize)

    def __str__(self):
        return f"{self.dtype}{list(self.shape)}"


@dataclass
class TensorSpec:
    """A graph input or output as users see it.

    shape: one entry per dimension, an int or None for a dynamic dimension (the batch, usually).
    layout: "NCHW", "NHWC" or "" — informational, e.g. Keras models take NHWC input.
    """

    name: str
    shape: tuple
    dtype: str = "float32"
    layout: str = ""

    def __repr__(self):
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        lay = f", layout={self.layout!r}" if self.layout else ""
        return f"TensorSpec(name={self.name!r}, shape=({dims}{',' if len(self.shape) == 1 else ''}), dtype={self.dtype!r}{lay})"

    def to_json(self):
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.layout:
            d["layout"] = self.layout
        return d


@dataclass
class Node:
    """One operator application. `inputs` may contain "" for an omitted optional input."""

    op: str
    name: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)

    def copy(self) -> "Node":
        return Node(self.op, self.name, list(self.inputs), list(self.outputs), dict(self.attrs))

    def to_json(self):
        # a floats attribute may be a float64 array (ir/weights.frozen_scale): JSON has lists
        attrs = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in self.attrs.items()}
        return {"op": self.op, "name": self.name, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "attrs": attrs}

    def __repr__(self):
        return f"Node({self.op} {self.name!r}: {self.inputs} -> {self.outputs})"


class Graph:
    """A static computation graph.

    inputs:       runtime inputs (values fed by the user), in order.
    outputs:      the values returned by `run`, in order (shapes informational).
    nodes:        operators in topological order (`check()` sorts them).
    initializers: name -> numpy array, constant tensors (weights); arrays are never mutated in place.
    metadata:     JSON data carried with the model (class labels, producer, preprocessing).
    source:       where the graph came from (a file name), used to prefix error messages.
    """

    def __init__(self, name="graph", inputs=(), outputs=(), nodes=(), initializers=None,
                 metadata=None, source=""):
        self.name = name
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.nodes = list(nodes)
        self.initializers = dict(initializers or {})
        self.metadata = dict(metadata or {})
        self.source = source
        # PIPELINE_ID when this graph is the default pass pipeline's output (not copied: an
        # edited copy must go through the passes again)
        self.passes_applied = None

    # ---------------------------------------------------------------- structure
    def copy(self) -> "Graph":
        """A copy whose node list and attribute dicts may be edited; arrays are shared."""
        return Graph(self.name, [TensorSpec(t.name, tuple(t.shape), t.dtype, t.layout) for t in self.inputs],
                     [TensorSpec(t.name, tuple(t.shape), t.dtype, t.layout) for t in self.outputs],
                     [n.copy() for n in self.nodes], dict(self.initializers),
                     dict(self.metadata), self.source)

    def where(self) -> str:
        return self.source or self.name

    def producers(self) -> dict:
        """value name -> index of the node producing it."""
        out = {}
        for i, node in enumerate(self.nodes):
            for o in node.outputs:
                if o:
                    out[o] = i
        return out

    def consumers(self) -> dict:
        """value name -> list of indices of nodes reading it (a node reading twice appears twice)."""
        out = {}
        for i, node in enumerate(self.nodes):
            for x in node.inputs:
                if x:
                    out.setdefault(x, []).append(i)
        return out

    def check(self) -> "Graph":
        """Validate structure and sort nodes topologically, in place. Raises GraphError.

        Checks: unique node names (empty names are filled in), every value defined exactly once
        (graph input, initializer or node output), every node input and graph output defined,
        no cycles.
        """
        where = self.where()
        defined = {}
        for t in self.inputs:
            if not isinstance(t.name, str) or not t.name:
                raise GraphError(f"{where}: a graph input has no name")
            if t.name in defined:
                raise GraphError(f"{where}: graph input '{t.name}' is declared twice")
            defined[t.name] = "graph input"
        for name in self.initializers:
            if name in defined:
                # Old ONNX files list initializers among the inputs: those are weights, not inputs.
                raise GraphError(f"{where}: tensor '{name}' is both a graph input and an initializer")
            defined[name] = "initializer"
        names = set()
        for i, node in enumerate(self.nodes):
            if not node.name:
                node.name = f"{node.op}_{i}"
            if node.name in names:
                k = 1
                while f"{node.name}_{k}" in names:
                    k += 1
                node.name = f"{node.name}_{k}"
            names.add(node.name)
            for o in node.outputs:
                if not o:
                    continue
                if o in defined:
                    raise GraphError(f"{where}: node '{node.name}' ({node.op}) writes tensor '{o}', "
                                     f"which is already defined as a {defined[o]}")
                defined[o] = f"output of node '{node.name}'"
        # the nodes are usually in order already (importers emit them so, passes keep it): seen
        # while checking the inputs, that spares the sort (a third of a check; ten checks a load)
        in_order = True
        ready = {t.name for t in self.inputs}
        ready.update(self.initializers)
        for node in self.nodes:
            for x in node.inputs:
                if x and x not in ready:
                    if x not in defined:
                        raise GraphError(f"{where}: node '{node.name}' ({node.op}) reads tensor "
                                         f"'{x}', which no input, initializer or node defines")
                    in_order = False
            ready.update(node.outputs)
        for t in self.outputs:
            if t.name not in defined:
                raise GraphError(f"{where}: graph output '{t.name}' is not defined by any node, "
                                 f"input or initializer")
        if not in_order:
            self._toposort()
        return self

    def _toposort(self):
        producer = self.producers()
        order, state = [], [0] * len(self.nodes)  # 0 new, 1 on stack, 2 done
        for root in range(len(self.nodes)):
            if state[root]:
                continue
            stack = [(root, 0)]
            state[root] = 1
            while stack:
                i, k = stack.pop()
                inputs = self.nodes[i].inputs
                while k < len(inputs):
                    j = producer.get(inputs[k]) if inputs[k] else None
                    k += 1
                    if j is None or state[j] == 2:
                        continue
                    if state[j] == 1:
                        n = self.nodes[j]
                        raise GraphError(f"{self.where()}: the graph has a cycle through node "
                                         f"'{n.name}' ({n.op})")
                    stack.append((i, k))
                    stack.append((j, 0))
                    state[j] = 1
                    break
                else:
                    state[i] = 2
                    order.append(i)
        self.nodes = [self.nodes[i] for i in order]

    # ---------------------------------------------------------------- naming
    def used_names(self) -> set:
        """Every value and node name of the graph."""
        used = {t.name for t in self.inputs} | {t.name for t in self.outputs} | set(self.initializers)
        for n in self.nodes:
            used.add(n.name)
            used.update(n.outputs)
        return used

    def unique_name(self, base: str, used: set | None = None) -> str:
        """A value or node name not used anywhere in the graph yet. The names are gathered each
        call (passes edit graphs freely), or a pass that adds many passes `used`, from
        `used_names()` when it started: the new name is added to it (names the pass removed
        stay in it, which only costs a suffix)."""
        if used is None:
            used = self.used_names()
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    def add_initializer(self, base: str, array: np.ndarray, used: set | None = None) -> str:
        """Store `array` under a new name made from `base` (unique_name) and return the name."""
        name = self.unique_name(base, used)
        self.initializers[name] = array
        return name

    def __repr__(self):
        return (f"Graph({self.name!r}: {len(self.inputs)} inputs, {len(self.outputs)} outputs, "
                f"{len(self.nodes)} nodes, {len(self.initializers)} initializers)")
