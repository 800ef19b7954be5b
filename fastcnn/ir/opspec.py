"""What the IR knows about an operator: arity, attribute schema, shape function, constant folder.

`OpSpec` entries live in one table, `fastcnn.ir.ops.OPS`. Shape functions receive a `NodeContext`
and return the output `ValueType`s; they are the single place where every shape, dtype and
attribute value is validated, so kernels never see anything they cannot handle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from fastcnn.errors import GraphError, UnsupportedOpError
from fastcnn.ir.graph import DTYPES, Node, ValueType

REQUIRED = object()  # marker: an attribute without a default
MAX_ATTR_LIST = 4096  # longer attribute lists are refused (a model file is untrusted data)
ATTR_KINDS = ("int", "float", "str", "ints", "floats", "strs")


@dataclass(frozen=True)
class Attr:
    kind: str               # one of ATTR_KINDS
    default: object = REQUIRED


@dataclass(frozen=True)
class OpSpec:
    """One operator of the IR.

    infer:   shape function, `infer(ctx) -> list[ValueType]` (one per output), raises GraphError.
    fold:    numpy evaluation `fold(ctx, values) -> list[np.ndarray]`, used when every input is a
             known constant (or, with `fold_on_types`, when input *types* suffice, as for Shape).
             None: the op is only evaluated by its runtime kernel.
    inputs:  (min, max) number of input slots; max None = variadic.
    outputs: (min, max) number of outputs.
    attrs:   attribute schema; unknown attributes are refused.
    doc:     one line for the README's operator table.
    """

    infer: Callable
    fold: Optional[Callable] = None
    inputs: tuple = (1, 1)
    outputs: tuple = (1, 1)
    attrs: dict = field(default_factory=dict)
    doc: str = ""
    fold_on_types: bool = False


_INT64_MIN, _INT64_END = -(2 ** 63), 2 ** 63


def _plain_ints(value) -> bool:
    """A list of Python ints within int64 and MAX_ATTR_LIST: what almost every ints attribute
    is (checked in one pass; anything else takes the full, per-item check)."""
    return (type(value) is list and len(value) <= MAX_ATTR_LIST
            and all(type(v) is int and _INT64_MIN <= v < _INT64_END for v in value))


def _plain_floats(value) -> bool:
    """A list of Python floats within MAX_ATTR_LIST, checked in one pass."""
    # the set of item types, built in C: 1.6x faster than a generator (a hand-built graph's
    # weight_scale, one value per output channel, is checked at every inference that resolves
    # attributes; the BatchNorm pass writes arrays, _float64_vector)
    return type(value) is list and len(value) <= MAX_ATTR_LIST and set(map(type, value)) <= _FLOAT_TYPE


_FLOAT_TYPE = {float}


def _float64_vector(value) -> bool:
    """A read-only 1-D float64 array within MAX_ATTR_LIST: a floats attribute as a pass writes
    it (ir/weights.frozen_scale), checked without a look at each value."""
    return (type(value) is np.ndarray and value.dtype == np.float64 and value.ndim == 1
            and value.size <= MAX_ATTR_LIST and not value.flags.writeable)


def _check_attr(node: Node, name: str, kind: str, value, where: str):
    # the plain JSON cases first: resolve_attrs runs for every node at every load
    if kind == "int" and type(value) is int and _INT64_MIN <= value < _INT64_END:
        return value
    if kind == "float" and type(value) is float:
        return value
    if kind == "ints" and _plain_ints(value):
        return list(value)
    if kind == "floats" and _plain_floats(value):
        return list(value)
    if kind == "floats" and _float64_vector(value):
        return value   # read-only: shared as it is

    def bad(expect):
        raise GraphError(f"{where}: node '{node.name}' ({node.op}): attribute '{name}' must be "
                         f"{expect}, got {value!r:.80}")

    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            bad("an int")
        if not -(2 ** 63) <= int(value) < 2 ** 63:
            bad("an int64")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            bad("a float")
        return float(value)
    if kind == "str":
        if not isinstance(value, str) or len(value) > 256:
            bad("a string")
        return value
    if not isinstance(value, (list, tuple)) or len(value) > MAX_ATTR_LIST:
        bad(f"a list of at most {MAX_ATTR_LIST} items")
    item = kind[:-1]
    return [_check_attr(node, name, item, v, where) for v in value]


def resolve_attrs(node: Node, spec: OpSpec, where: str) -> dict:
    """Type-check `node.attrs` against `spec.attrs` and return them with defaults filled in."""
    if not isinstance(node.attrs, dict):
        raise GraphError(f"{where}: node '{node.name}' ({node.op}): attributes must be a mapping")
    if not node.attrs.keys() <= spec.attrs.keys():
        unknown = sorted(set(node.attrs) - set(spec.attrs))
        raise GraphError(f"{where}: node '{node.name}' ({node.op}): unknown attribute(s) "
                         f"{', '.join(map(repr, unknown))}; {node.op} takes "
                         f"{', '.join(sorted(spec.attrs)) or 'no attributes'}")
    out = {}
    for name, a in spec.attrs.items():
        if name in node.attrs:
            out[name] = _check_attr(node, name, a.kind, node.attrs[name], where)
        elif a.default is REQUIRED:
            raise GraphError(f"{where}: node '{node.name}' ({node.op}): attribute '{name}' is required")
        else:
            out[name] = list(a.default) if isinstance(a.default, (list, tuple)) else a.default
    return out


class NodeContext:
    """Everything a shape function or folder may look at for one node, plus error helpers.

    in_types[i] is None for an omitted optional input; in_consts[i] is the input's value when it is
    known while planning (an initializer or a folded tensor), else None.
    """

    __slots__ = ("node", "attrs", "in_types", "in_consts", "where")

    def __init__(self, node, attrs, in_types, in_consts, where):
        self.node = node
        self.attrs = attrs
        self.in_types = in_types
        self.in_consts = in_consts
        self.where = where

    # -- errors
    def _prefix(self):
        return f"{self.where}: node '{self.node.name}' ({self.node.op})"

    def fail(self, msg: str):
        raise GraphError(f"{self._prefix()}: {msg}")

    def unsupported(self, msg: str):
        raise UnsupportedOpError(f"{self._prefix()}: {msg}")

    # -- inputs
    @property
    def n_inputs(self) -> int:
        return len(self.in_types)

    def has(self, i: int) -> bool:
        return i < len(self.in_types) and self.in_types[i] is not None

    def name(self, i: int) -> str:
        return self.node.inputs[i]

    def type(self, i: int) -> ValueType:
        if not self.has(i):
            self.fail(f"input {i} is required")
        return self.in_types[i]

    def shape(self, i: int) -> tuple:
        return self.type(i).shape

    def dtype(self, i: int) -> str:
        return self.type(i).dtype

    def rank(self, i: int) -> int:
        return len(self.type(i).shape)

    def const(self, i: int, what: str = "") -> np.ndarray:
        """The value of input i, which must be known while planning."""
        v = self.in_consts[i] if i < len(self.in_consts) else None
        if v is None:
            self.unsupported(f"input {i} ('{self.name(i) if i < len(self.node.inputs) else ''}')"
                             f"{' (' + what + ')' if what else ''} must be a constant or computable "
                             f"from shapes; it is only known at run time")
        return v

    def is_const(self, i: int) -> bool:
        return i < len(self.in_consts) and self.in_consts[i] is not None

    def const_ints(self, i: int, what: str = "") -> list:
        v = self.const(i, what)
        if v.dtype.kind not in "iub":
            self.fail(f"input {i} ('{self.name(i)}', {what}) must hold integers, got {v.dtype}")
        if v.ndim > 1:
            self.fail(f"input {i} ('{self.name(i)}', {what}) must be 1-D, got shape {list(v.shape)}")
        return [int(x) for x in v.reshape(-1)]

    # -- checks
    def expect_rank(self, i: int, ranks, what: str = ""):
        r = self.rank(i)
        ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
        if r not in ranks:
            want = " or ".join(map(str, ranks))
            self.fail(f"input '{self.name(i)}'{' (' + what + ')' if what else ''} must have rank "
                      f"{want}, got rank {r} shape {list(self.shape(i))}")

    def expect_dtype(self, i: int, dtypes=("float32",)):
        d = self.dtype(i)
        if d not in dtypes:
            self.fail(f"input '{self.name(i)}' must have dtype {' or '.join(dtypes)}, got {d}")

    def expect_float(self, *idx):
        types = self.in_types
        for i in idx or range(len(types)):
            if i < len(types) and types[i] is not None and types[i].dtype != "float32":
                self.expect_dtype(i, ("float32",))   # raises, naming the input

    def axis(self, axis: int, rank: int, what: str = "axis", allow_end: bool = False) -> int:
        """Normalise a possibly negative axis into [0, rank) (or [0, rank] with allow_end)."""
        hi = rank + 1 if allow_end else rank
        a = axis + rank if axis < 0 else axis  # -1 is the last axis, with allow_end too
        if not 0 <= a < hi:
            self.fail(f"{what}={axis} is out of range for rank {rank}")
        return a


def broadcast_shapes(ctx: NodeContext, shapes) -> tuple:
    """numpy/ONNX multidirectional broadcasting of several shapes, with a named error."""
    rank = max(len(s) for s in shapes)
    out = []
    for k in range(rank):
        dim = 1
        for s in shapes:
            d = s[k - rank + len(s)] if k - rank + len(s) >= 0 else 1
            if d != 1:
                if dim not in (1, d):
                    ctx.fail("shapes " + ", ".join(str(list(s)) for s in shapes) +
                             " cannot be broadcast together")
                dim = d
            elif dim == 1 and d == 0:
                dim = 0
        out.append(dim)
    return tuple(out)


def check_dtype_name(ctx: NodeContext, dtype: str) -> str:
    if dtype not in DTYPES:
        ctx.fail(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return dtype


def product(shape) -> int:
    return math.prod(int(d) for d in shape)
