"""prepare for layout and data-movement ops. Reshape-like ops are views (no step); the rest are
strided walks (`CopyStep`), fills and gathers over flat buffers."""
from __future__ import annotations

import numpy as np

from fastcnn._kernels.copy import CopyStep, FillStep, GatherStep
from fastcnn.ir import shapes
from fastcnn.runtime.layout import broadcast_strides, c_strides, collapse, flat
from fastcnn.runtime.prepare import Prepared, alias_prepared

MAXD = 8


class _ShapeCtx:
    """Re-run a shape function's resolution helpers (slice_params, pad_amounts, split_sizes)
    against a PrepareContext's inputs."""

    def __init__(self, p):
        from fastcnn.ir.opspec import NodeContext
        self.ctx = NodeContext(p.node, p.attrs, p.in_types, p.in_consts, p.where)


def copy_step(src, dst, shape, src_off, src_strides, dst_off, dst_strides):
    """A CopyStep over `shape` after merging contiguous dims; None when nothing to copy."""
    if any(d == 0 for d in shape):
        return None
    cshape, (ss, ds) = collapse(shape, src_strides, dst_strides)
    if len(cshape) > MAXD:
        raise ValueError(f"strided copy over {len(cshape)} dims (at most {MAXD})")
    return CopyStep(flat(src), flat(dst), cshape, src_off, ss, dst_off, ds)


def _too_many_dims(p, shape):
    if len(shape) > MAXD:
        p.unsupported(f"tensors of rank {len(shape)} (at most {MAXD})")


def prepare_transpose(p):
    x = p.in_types[0].shape
    _too_many_dims(p, x)
    perm = p.attrs["perm"] or list(range(len(x)))[::-1]
    y = p.out_types[0].shape
    xs = c_strides(x)

    def bind(ins, outs, scratch):
        return copy_step(ins[0], outs[0], y, 0, [xs[k] for k in perm], 0, c_strides(y))

    return Prepared(bind)


def prepare_concat(p):
    y = p.out_types[0].shape
    _too_many_dims(p, y)
    axis = p.attrs["axis"] % len(y)
    ys = c_strides(y)

    def bind(ins, outs, scratch):
        steps, off = [], 0
        for x in ins:
            x = np.asarray(x, np.float32)
            steps.append(copy_step(x, outs[0], x.shape, 0, c_strides(x.shape), off * ys[axis], ys))
            off += x.shape[axis]
        return steps

    return Prepared(bind)


def prepare_split(p):
    x = p.in_types[0].shape
    _too_many_dims(p, x)
    axis, sizes = shapes.split_sizes(_ShapeCtx(p).ctx)
    xs = c_strides(x)

    def bind(ins, outs, scratch):
        steps, off = [], 0
        for out, size in zip(outs, sizes):
            if out is not None:
                steps.append(copy_step(ins[0], out, out.shape, off * xs[axis], xs, 0, c_strides(out.shape)))
            off += size
        return steps

    return Prepared(bind)


def prepare_slice(p):
    x = p.in_types[0].shape
    _too_many_dims(p, x)
    starts, _, steps, y = shapes.slice_params(_ShapeCtx(p).ctx)
    xs = c_strides(x)
    offset = sum(s * st for s, st in zip(starts, xs) if True)
    src_strides = [st * step for st, step in zip(xs, steps)]

    def bind(ins, outs, scratch):
        return copy_step(ins[0], outs[0], y, offset if all(d > 0 for d in y) else 0,
                         src_strides, 0, c_strides(y))

    return Prepared(bind)


def prepare_expand(p):
    x, y = p.in_types[0].shape, p.out_types[0].shape
    _too_many_dims(p, y)

    def bind(ins, outs, scratch):
        return copy_step(ins[0], outs[0], y, 0, broadcast_strides(x, y), 0, c_strides(y))

    return Prepared(bind)


def prepare_tile(p):
    x, y = p.in_types[0].shape, p.out_types[0].shape
    reps = [y[i] // x[i] if x[i] else 0 for i in range(len(x))]
    xs, ys = c_strides(x), c_strides(y)
    # out index along axis k = r * x[k] + i: walk (r, i) pairs
    shape, ss, ds = [], [], []
    for k in range(len(x)):
        if reps[k] != 1:
            shape.append(reps[k])
            ss.append(0)
            ds.append(x[k] * ys[k])
        shape.append(x[k])
        ss.append(xs[k])
        ds.append(ys[k])
    cshape, _ = collapse(shape, ss, ds)
    if len(cshape) > MAXD:
        p.unsupported(f"Tile over {len(cshape)} walk dims (at most {MAXD})")

    def bind(ins, outs, scratch):
        return copy_step(ins[0], outs[0], shape, 0, ss, 0, ds)

    return Prepared(bind)


def prepare_depth_to_space(p):
    n, c, h, w = p.in_types[0].shape
    b = p.attrs["blocksize"]
    c2 = c // (b * b)
    if p.node.op == "DepthToSpace":
        if p.attrs["mode"] == "DCR":
            src_shape, perm = (n, b, b, c2, h, w), (0, 3, 4, 1, 5, 2)
        else:
            src_shape, perm = (n, c2, b, b, h, w), (0, 1, 4, 2, 5, 3)
        walk = tuple(src_shape[k] for k in perm)   # (n, c2, h, b, w, b)
        src_strides = [c_strides(src_shape)[k] for k in perm]
        dst_strides = c_strides(walk)
    else:  # SpaceToDepth: x (n, c, h/b, b, w/b, b) -> (n, b, b, c, h/b, w/b)
        src_shape, perm = (n, c, h // b, b, w // b, b), (0, 3, 5, 1, 2, 4)
        walk = tuple(src_shape[k] for k in perm)
        src_strides = [c_strides(src_shape)[k] for k in perm]
        dst_strides = c_strides(walk)

    def bind(ins, outs, scratch):
        return copy_step(ins[0], outs[0], walk, 0, src_strides, 0, dst_strides)

    return Prepared(bind)


def prepare_gather(p):
    x = p.in_types[0].shape
    axis = p.attrs["axis"] % len(x)
    idx = p.const(1)
    if idx is None:
        p.unsupported("Gather with indices computed at run time")
    idx = np.asarray(idx, np.int64).reshape(-1)
    idx = np.where(idx < 0, idx + x[axis], idx).astype(np.int64)
    outer = int(np.prod(x[:axis], dtype=np.int64))
    inner = int(np.prod(x[axis + 1:], dtype=np.int64))

    def bind(ins, outs, scratch):
        return GatherStep(flat(ins[0]), flat(outs[0]), idx, outer, x[axis], inner)

    return Prepared(bind)


def prepare_pad(p):
    x, y = p.in_types[0].shape, p.out_types[0].shape
    _too_many_dims(p, x)
    begin, end = shapes.pad_amounts(_ShapeCtx(p).ctx)
    mode = p.attrs["mode"]
    value = 0.0
    if mode == "constant" and len(p.node.inputs) > 2 and p.node.inputs[2]:
        cv = p.const(2)
        if cv is None:
            p.unsupported("Pad with a constant_value computed at run time")
        value = float(np.asarray(cv).reshape(-1)[0])
    xs, ys = c_strides(x), c_strides(y)
    r = len(x)
    # interior: out[i] = x[i - begin] along each axis, for out indices [dst_lo, dst_lo + inner)
    # (negative pads crop; pads cropping more than the axis holds leave nothing to copy)
    dst_lo = [max(b, 0) for b in begin]
    inner = [max(0, min(x[k] + begin[k], y[k]) - dst_lo[k]) for k in range(r)]
    crop_lo = [dst_lo[k] - begin[k] for k in range(r)]
    src_off = sum(c * s for c, s in zip(crop_lo, xs))
    dst_off = sum(d * s for d, s in zip(dst_lo, ys))

    def bind(ins, outs, scratch):
        out = outs[0]
        steps = []
        if mode == "constant" and any(b > 0 for b in begin + end):
            steps.append(FillStep(flat(out), value))
        steps.append(copy_step(ins[0], out, inner, src_off, xs, dst_off, ys))
        if mode == "constant":
            return steps
        # Border slabs, one axis at a time, copied from the already written part of `out`:
        # axes before k span their full padded extent, axes after k only the interior.
        for k in range(r):
            lo, hi = dst_lo[k], dst_lo[k] + inner[k]   # interior along k, in out coordinates
            shape = [y[j] if j < k else inner[j] for j in range(r)]
            base = sum((0 if j < k else dst_lo[j]) * ys[j] for j in range(r) if j != k)
            for first_dst, count, first_src, step in _border_runs(mode, lo, hi, y[k], inner[k]):
                shape_k = list(shape)
                shape_k[k] = count
                src_strides = list(ys)
                src_strides[k] = step * ys[k]
                steps.append(copy_step(out, out, shape_k, base + first_src * ys[k], src_strides,
                                       base + first_dst * ys[k], ys))
        return steps

    return Prepared(bind)


def _border_runs(mode, lo, hi, size, inner):
    """Copies that fill the padding of one axis from its interior [lo, hi) (out coordinates,
    inner = hi - lo > 0 elements; the shape function guarantees reflect pads < inner).

    Yields (first_dst, count, first_src, step): out[first_dst + t] = out[first_src + t * step]
    for t < count. Source and destination never overlap.
    """
    if mode == "reflect":                      # out[lo - 1 - t] = out[lo + 1 + t]
        if lo:
            yield 0, lo, lo + lo, -1
        if size - hi:                          # out[hi + t] = out[hi - 2 - t]
            yield hi, size - hi, hi - 2, -1
    elif mode == "edge":
        if lo:
            yield 0, lo, lo, 0
        if size - hi:
            yield hi, size - hi, hi - 1, 0
    else:  # wrap: out[t] = out[lo + (t - lo) mod inner], in runs that do not wrap around
        t = 0
        while t < lo:
            src = lo + (t - lo) % inner
            count = min(lo - t, hi - src)
            yield t, count, src, 1
            t += count
        t = hi
        while t < size:
            src = lo + (t - lo) % inner
            count = min(size - t, hi - src)
            yield t, count, src, 1
            t += count


def prepare_alias(p):
    return alias_prepared(p)
