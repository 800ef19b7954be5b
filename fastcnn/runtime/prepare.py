"""What a kernel's `prepare` function receives and returns.

`prepare(p: PrepareContext) -> Prepared` runs once per plan (per input shape): it picks the
algorithm, packs weights (cached across plans in `p.cache`), and returns a `bind` function that
the planner calls with the node's buffers once the arena is laid out. `bind` builds the Step
objects; nothing after that allocates or validates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from fastcnn.errors import GraphError, UnsupportedOpError


@dataclass
class PrepareContext:
    """node, attrs (validated, defaults filled), in_types/out_types (ValueType; None for omitted
    inputs), in_consts (numpy arrays for inputs known while planning, else None), num_threads,
    cache (dict shared by every plan of one model: packed weights live here), where (file name),
    in_blocked / out_blocked (per input / output: stored NCHW8c, see runtime/blocking.py; only
    ops with a layout rule ever see True), weight_pool (the model's runtime.weight_pool.WeightPool,
    or None): packers allocate the weights they pack with `alloc`."""

    node: object
    attrs: dict
    in_types: list
    out_types: list
    in_consts: list
    num_threads: int
    cache: dict
    where: str = ""
    in_blocked: list = field(default_factory=list)
    out_blocked: list = field(default_factory=list)
    weight_pool: object = None

    @property
    def alloc(self):
        """The allocator to give a packer (`gemm.packed_array`): the model's weight pool's, or
        None for np.empty."""
        return self.weight_pool.empty if self.weight_pool is not None else None

    def blocked_in(self, i) -> bool:
        return i < len(self.in_blocked) and self.in_blocked[i]

    def blocked_out(self, i) -> bool:
        return i < len(self.out_blocked) and self.out_blocked[i]

    def fail(self, msg):
        raise GraphError(f"{self.where}: node '{self.node.name}' ({self.node.op}): {msg}")

    def unsupported(self, msg):
        raise UnsupportedOpError(f"{self.where}: node '{self.node.name}' ({self.node.op}): {msg}")

    def const(self, i):
        return self.in_consts[i] if i < len(self.in_consts) else None

    def cached(self, key, make):
        """Per-model cache of derived constants (packed weights): `make()` runs once per key."""
        full = (self.node.name,) + (key if isinstance(key, tuple) else (key,))
        v = self.cache.get(full)
        if v is None:
            v = make()
            self.cache[full] = v
        return v

    def const_f32(self, i):
        """Input i as a C-contiguous, aligned float32 array (constants are validated float32
        already; one viewing an .onnx file at an odd offset is copied: kernels read it)."""
        return np.require(self.in_consts[i], np.float32, ("C", "A"))


@dataclass
class Prepared:
    """bind(ins, outs, scratch) -> Step or list of Steps, or None for a no-op.

    ins:     per input slot, the arena view (runtime value), the constant array, or None (omitted).
    outs:    per output, the arena view (C-contiguous float32, the output's shape).
    scratch: 1-D float32 view of at least `scratch` elements, shared by all steps of the plan.
    alias:   output 0 is input 0 with another shape (Reshape, Flatten, ...): no step, no buffer.
    inplace: output 0 may use input `inplace`'s buffer when that input is not needed afterwards.
    """

    bind: Optional[Callable] = None
    scratch: int = 0
    alias: bool = False
    inplace: Optional[int] = None
    flops: int = 0
    notes: dict = field(default_factory=dict)


def alias_prepared(p: PrepareContext) -> Prepared:
    """For ops whose output is a view of input 0 (same data, another shape)."""
    return Prepared(alias=True)
