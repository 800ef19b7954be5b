"""Independent numpy references for fastcnn's operators.

Written from the operator definitions (ONNX semantics), never calling fastcnn, and deliberately
simple (explicit loops or plain numpy) so they are easy to check by eye. float64 internally.
"""
from __future__ import annotations

import math

import numpy as np


def out_size(size, k, stride, pad_begin, pad_end, dilation=1, ceil_mode=False):
    """floor((W + pb + pe - d*(K-1) - 1) / S) + 1, ceil with ceil_mode (the last window must start
    inside the input or the begin padding)."""
    span = size + pad_begin + pad_end - dilation * (k - 1) - 1
    if span < 0:
        return 0   # the window does not fit in the padded input
    if ceil_mode:
        o = -(-span // stride) + 1
        if (o - 1) * stride >= size + pad_begin:
            o -= 1
        return o
    return span // stride + 1


def conv2d(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), group=1):
    """Cross-correlation as ONNX/PyTorch/Keras compute it.

    x: (N, C_in, H, W); w: (C_out, C_in/group, KH, KW); pads: (top, left, bottom, right)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c_in, h, wd = x.shape
    c_out, cig, kh, kw = w.shape
    pt, pl, pb, pr = pads
    xp = np.zeros((n, c_in, h + pt + pb, wd + pl + pr))
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    ho = out_size(h, kh, stride[0], pt, pb, dilation[0])
    wo = out_size(wd, kw, stride[1], pl, pr, dilation[1])
    y = np.zeros((n, c_out, ho, wo))
    cog = c_out // group
    for g in range(group):
        xs = xp[:, g * cig:(g + 1) * cig]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dilation[0]: i * dilation[0] + stride[0] * (ho - 1) + 1: stride[0],
                           j * dilation[1]: j * dilation[1] + stride[1] * (wo - 1) + 1: stride[1]]
                # (n, cig, ho, wo) x (cog, cig) -> (n, cog, ho, wo)
                y[:, g * cog:(g + 1) * cog] += np.einsum("nchw,oc->nohw", patch,
                                                         w[g * cog:(g + 1) * cog, :, i, j])
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, -1, 1, 1)
    return y


def conv2d_loops(x, w, stride=1):
    """The most literal convolution: four nested loops, no padding (for the worked example)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    h, wd = x.shape
    kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    y = np.zeros((ho, wo))
    for i in range(ho):
        for j in range(wo):
            s = 0.0
            for a in range(kh):
                for b in range(kw):
                    s += x[i * stride + a, j * stride + b] * w[a, b]
            y[i, j] = s
    return y


def pool2d(x, kind, kernel, stride=None, pads=(0, 0, 0, 0), dilation=(1, 1), ceil_mode=False,
           count_include_pad=False, p=2):
    """Windowed pooling over (N, C, H, W). kind: max, min, avg, lp, stochastic.
    pads: (top, left, bottom, right). Positions in padding are ignored, except in the average's
    divisor with count_include_pad (positions inside the padded input)."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = stride or kernel
    pt, pl, pb, pr = pads
    ho = out_size(h, kh, sh, pt, pb, dilation[0], ceil_mode)
    wo = out_size(w, kw, sw, pl, pr, dilation[1], ceil_mode)
    y = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            rows = [i * sh - pt + a * dilation[0] for a in range(kh)]
            cols = [j * sw - pl + b * dilation[1] for b in range(kw)]
            rr = [r for r in rows if 0 <= r < h]
            cc = [q for q in cols if 0 <= q < w]
            win = x[:, :, rr][:, :, :, cc].reshape(n, c, -1)
            if kind == "max":
                y[:, :, i, j] = win.max(axis=2)
            elif kind == "min":
                y[:, :, i, j] = win.min(axis=2)
            elif kind == "avg":
                if count_include_pad:
                    cnt = sum(1 for r in rows if r < h + pb) * sum(1 for q in cols if q < w + pr)
                else:
                    cnt = win.shape[2]
                y[:, :, i, j] = win.sum(axis=2) / cnt
            elif kind == "lp":
                y[:, :, i, j] = (np.abs(win) ** p).sum(axis=2) ** (1.0 / p)
            elif kind == "stochastic":
                pos = np.maximum(win, 0)
                s = pos.sum(axis=2)
                y[:, :, i, j] = np.where(s > 0, (pos * pos).sum(axis=2) / np.where(s > 0, s, 1), 0)
            else:
                raise ValueError(kind)
    return y


def gemm(a, b, c=None, alpha=1.0, beta=1.0, trans_a=False, trans_b=False):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    y = alpha * (a @ b)
    if c is not None:
        y = y + beta * np.asarray(c, np.float64)
    return y


def softmax(x, axis=-1, log=False):
    x = np.asarray(x, np.float64)
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    return (x - m - np.log(s)) if log else e / s


def batchnorm(x, scale, bias, mean, var, eps=1e-5):
    x = np.asarray(x, np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return ((x - np.reshape(mean, shape)) / np.sqrt(np.reshape(var, shape) + eps)
            * np.reshape(scale, shape) + np.reshape(bias, shape))


def lrn(x, size, alpha=1e-4, beta=0.75, bias=1.0):
    x = np.asarray(x, np.float64)
    c = x.shape[1]
    sq = x * x
    y = np.empty_like(x)
    for ch in range(c):
        lo = max(0, ch - (size - 1) // 2)
        hi = min(c - 1, ch + int(math.ceil((size - 1) / 2)))
        s = sq[:, lo:hi + 1].sum(axis=1)
        y[:, ch] = x[:, ch] / (bias + alpha / size * s) ** beta
    return y


ACTIVATIONS = {
    "Relu": lambda x: np.maximum(x, 0),
    "LeakyRelu": lambda x, alpha=0.01: np.where(x >= 0, x, alpha * x),
    "Elu": lambda x, alpha=1.0: np.where(x > 0, x, alpha * (np.exp(np.minimum(x, 0)) - 1)),
    "Clip": lambda x, lo=-np.inf, hi=np.inf: np.minimum(np.maximum(x, lo), hi),
    "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "Tanh": np.tanh,
    "HardSigmoid": lambda x, alpha=0.2, beta=0.5: np.clip(alpha * x + beta, 0, 1),
    "HardSwish": lambda x: x * np.clip(x / 6.0 + 0.5, 0, 1),
}


# ----------------------------------------------------------------------------- activations
def _erf(x):
    x = np.asarray(x, np.float64)
    return np.vectorize(math.erf, otypes=[np.float64])(x) if x.size else x.copy()


def _where_nan(x, y):
    """y, but NaN wherever x is NaN (activations propagate NaN)."""
    return np.where(np.isnan(x), x, y)


# Written from the ONNX operator definitions; x is float64. NaN in gives NaN out everywhere.
ACTIVATIONS.update({
    "Selu": lambda x, alpha=1.6732632423543772, gamma=1.0507009873554805:
        gamma * np.where(x > 0, x, alpha * (np.exp(np.minimum(x, 0)) - 1)),
    "Celu": lambda x, alpha=1.0: np.maximum(0, x) + np.minimum(0, alpha * (np.exp(np.minimum(x, 0) / alpha) - 1))
        + np.where(np.isnan(x), x, 0),
    "ThresholdedRelu": lambda x, alpha=1.0: _where_nan(x, np.where(x > alpha, x, 0.0)),
    "Softplus": lambda x: np.where(x > 30, x, np.log1p(np.exp(np.minimum(x, 30)))),
    "Softsign": lambda x: x / (1 + np.abs(x)),
    "Gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "GeluTanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "Mish": lambda x: x * np.tanh(np.where(x > 30, x, np.log1p(np.exp(np.minimum(x, 30))))),
    "Exp": np.exp,
    "Log": np.log,
    "Sqrt": np.sqrt,
    "Neg": np.negative,
    "Abs": np.abs,
    "Reciprocal": lambda x: 1.0 / x,
    "Floor": np.floor,
    "Ceil": np.ceil,
    "Round": np.round,          # half to even, as ONNX
    "Erf": _erf,
    "Sign": np.sign,
    "Identity": lambda x: x,
})


def prelu(x, slope):
    """x if x >= 0 else slope * x, slope broadcast to x (numpy rules)."""
    x = np.asarray(x, np.float64)
    return np.where(x < 0, x * np.asarray(slope, np.float64), x)


def hardswish_loops(x):
    """x * relu6(x + 3) / 6, one element at a time (independent of the vector form)."""
    flat = np.asarray(x, np.float64).reshape(-1)
    out = np.empty_like(flat)
    for i, v in enumerate(flat):
        out[i] = v * min(max(v + 3.0, 0.0), 6.0) / 6.0
    return out.reshape(np.shape(x))


# ----------------------------------------------------------------------------- pooling
def pool1d(x, kind, kernel, stride=None, pads=(0, 0), dilation=1, ceil_mode=False,
           count_include_pad=False, p=2):
    """Windowed pooling over (N, C, W) as a (N, C, 1, W) pool2d."""
    x = np.asarray(x, np.float64)
    y = pool2d(x[:, :, None, :], kind, (1, kernel), (1, stride or kernel), (0, pads[0], 0, pads[1]),
               (1, dilation), ceil_mode, count_include_pad, p)
    return y[:, :, 0, :]


def global_pool(x, kind, p=2):
    """x (N, C, spatial...) -> (N, C, 1, ...): mean, max or Lp norm over all spatial positions."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(2, x.ndim))
    if kind == "avg":
        return x.mean(axis=axes, keepdims=True)
    if kind == "max":
        return x.max(axis=axes, keepdims=True)
    if kind == "lp":
        return (np.abs(x) ** p).sum(axis=axes, keepdims=True) ** (1.0 / p)
    raise ValueError(kind)


# ----------------------------------------------------------------------------- normalisation
def instancenorm(x, scale, bias, eps=1e-5):
    """Per (sample, channel) over the spatial axes (biased variance)."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean) / np.sqrt(var + eps) * np.reshape(scale, shape) + np.reshape(bias, shape)


def layernorm(x, scale, bias=None, axis=-1, eps=1e-5):
    """Over axes [axis, rank); scale/bias broadcast to those axes."""
    x = np.asarray(x, np.float64)
    axis = axis % x.ndim
    axes = tuple(range(axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * np.asarray(scale, np.float64)
    return y + np.asarray(bias, np.float64) if bias is not None else y


# ----------------------------------------------------------------------------- reductions
def reduce(x, op, axes=None, keepdims=True):
    """ONNX Reduce* over `axes` (None: all axes), float64."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in axes)
    fn = {
        "ReduceSum": lambda: x.sum(axis=axes, keepdims=keepdims),
        "ReduceMean": lambda: x.mean(axis=axes, keepdims=keepdims),
        "ReduceMax": lambda: x.max(axis=axes, keepdims=keepdims),
        "ReduceMin": lambda: x.min(axis=axes, keepdims=keepdims),
        "ReduceProd": lambda: x.prod(axis=axes, keepdims=keepdims),
        "ReduceL1": lambda: np.abs(x).sum(axis=axes, keepdims=keepdims),
        "ReduceL2": lambda: np.sqrt((x * x).sum(axis=axes, keepdims=keepdims)),
        "ReduceSumSquare": lambda: (x * x).sum(axis=axes, keepdims=keepdims),
        "ReduceLogSumExp": lambda: np.log(np.exp(x).sum(axis=axes, keepdims=keepdims)),
    }[op]
    with np.errstate(all="ignore"):
        return fn()


# ----------------------------------------------------------------------------- data movement
def depth_to_space(x, b, mode="DCR"):
    """Loops over the output: (N, C, H, W) -> (N, C/b^2, H*b, W*b)."""
    x = np.asarray(x)
    n, c, h, w = x.shape
    c2 = c // (b * b)
    y = np.empty((n, c2, h * b, w * b), x.dtype)
    for ch in range(c2):
        for i in range(b):
            for j in range(b):
                src = (i * b + j) * c2 + ch if mode == "DCR" else ch * b * b + i * b + j
                y[:, ch, i::b, j::b] = x[:, src]
    return y


def space_to_depth(x, b):
    """Loops: (N, C, H, W) -> (N, C*b^2, H/b, W/b), channel (i*b + j)*C + c."""
    x = np.asarray(x)
    n, c, h, w = x.shape
    y = np.empty((n, c * b * b, h // b, w // b), x.dtype)
    for i in range(b):
        for j in range(b):
            for ch in range(c):
                y[:, (i * b + j) * c + ch] = x[:, ch, i::b, j::b]
    return y


def pad(x, pads, mode="constant", value=0.0):
    """ONNX Pad: pads = [begin..., end...] per axis; negative values crop first."""
    x = np.asarray(x)
    r = x.ndim
    begin, end = pads[:r], pads[r:]
    if mode == "constant":
        # element by element: out[i] = x[i - begin] when inside x, else value
        out = np.full(tuple(d + b + e for d, b, e in zip(x.shape, begin, end)), value, x.dtype)
        for idx in np.ndindex(*out.shape):
            src = tuple(i - b for i, b in zip(idx, begin))
            if all(0 <= s < d for s, d in zip(src, x.shape)):
                out[idx] = x[src]
        return out
    x = x[tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(zip(begin, end)))]
    return np.pad(x, [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)], mode=mode)


def onnx_slice(x, starts, ends, axes=None, steps=None):
    """ONNX Slice, with the clamping rules of the operator definition spelled out and the
    selected indices listed explicitly."""
    x = np.asarray(x)
    axes = list(range(len(starts))) if axes is None else [a % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    for s, e, a, st in zip(starts, ends, axes, steps):
        dim = x.shape[a]
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
        picked = []
        i = s
        while (st > 0 and i < e) or (st < 0 and i > e):
            picked.append(i)
            i += st
        x = np.take(x, np.array(picked, dtype=np.int64), axis=a)
    return x


# ----------------------------------------------------------------------------- transposed conv
def conv_transpose2d(x, w, b=None, stride=(1, 1), pads=(0, 0), dilation=(1, 1), group=1,
                     out_hw=None):
    """ConvTranspose as a scatter: every input pixel adds w * x[n, ci, ih, iw] to the output
    window whose top-left is (ih*s_h - pad_top, iw*s_w - pad_left). Positions that fall outside
    the output are dropped.

    x: (N, C_in, H, W); w: (C_in, C_out/group, KH, KW); pads: (top, left) (the bottom/right
    padding only shortens the output); out_hw: output (H, W), by default the ONNX size
    s*(in-1) + d*(k-1) + 1 - pad_begin (with no end padding)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c_in, h, wd = x.shape
    _, cog, kh, kw = w.shape
    cig = c_in // group
    if out_hw is None:
        out_hw = (stride[0] * (h - 1) + dilation[0] * (kh - 1) + 1 - pads[0],
                  stride[1] * (wd - 1) + dilation[1] * (kw - 1) + 1 - pads[1])
    ho, wo = out_hw
    y = np.zeros((n, cog * group, ho, wo))
    for ci in range(c_in):
        g = ci // cig
        for ih in range(h):
            for iw in range(wd):
                for i in range(kh):
                    oh = ih * stride[0] - pads[0] + i * dilation[0]
                    if not 0 <= oh < ho:
                        continue
                    for j in range(kw):
                        ow = iw * stride[1] - pads[1] + j * dilation[1]
                        if not 0 <= ow < wo:
                            continue
                        y[:, g * cog:(g + 1) * cog, oh, ow] += x[:, ci, ih, iw][:, None] * w[ci, :, i, j]
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, -1, 1, 1)
    return y


def conv_transpose_out_size(size, k, stride, pad_begin, pad_end, dilation=1, output_padding=0):
    """ONNX: stride*(in-1) + output_padding + (k-1)*dilation + 1 - pad_begin - pad_end."""
    return stride * (size - 1) + output_padding + (k - 1) * dilation + 1 - pad_begin - pad_end


# ----------------------------------------------------------------------------- resize
def resize_source_coord(mode, o, scale, in_len, out_len, roi=(0.0, 1.0)):
    """Where output index o of one axis samples the input (ONNX coordinate_transformation_mode).
    scale: output/input scale of the axis; out_len: the integer output length."""
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (scale * in_len)
        offset = in_len / 2 * (1 - adjustment)
        return offset + (o + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if out_len > 1 else 0.0
    if mode == "align_corners":
        return o * (in_len - 1) / (out_len - 1) if out_len > 1 else 0.0
    if mode == "asymmetric":
        return o / scale
    if mode == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if out_len > 1:
            return start * (in_len - 1) + o * (end - start) * (in_len - 1) / (out_len - 1)
        return 0.5 * (start + end) * (in_len - 1)
    raise ValueError(mode)


def _cubic_weight(d, a):
    d = abs(d)
    if d <= 1:
        return (a + 2) * d ** 3 - (a + 3) * d ** 2 + 1
    if d < 2:
        return a * d ** 3 - 5 * a * d ** 2 + 8 * a * d - 4 * a
    return 0.0


def _nearest_index(xf, nearest_mode):
    fl = math.floor(xf)
    if nearest_mode == "floor":
        return fl
    if nearest_mode == "ceil":
        return math.ceil(xf)
    if xf - fl == 0.5:
        return fl if nearest_mode == "round_prefer_floor" else fl + 1
    return fl if xf - fl < 0.5 else fl + 1


def resize_taps(mode, xf, in_len, nearest_mode="round_prefer_floor", cubic_a=-0.75,
                exclude_outside=False):
    """[(input index, weight)] giving one output value of one axis from source coordinate xf."""
    if mode == "nearest":
        return [(min(max(_nearest_index(xf, nearest_mode), 0), in_len - 1), 1.0)]
    if mode == "linear":
        xf = min(max(xf, 0.0), in_len - 1.0)
        i0 = int(math.floor(xf))
        i1 = min(i0 + 1, in_len - 1)
        return [(i0, 1.0 - (xf - i0)), (i1, xf - i0)]
    if mode == "cubic":
        i0 = int(math.floor(xf))
        t = xf - i0
        taps = [(i0 + k, _cubic_weight(t - k, cubic_a)) for k in (-1, 0, 1, 2)]
        if exclude_outside:
            taps = [(i, wt if 0 <= i < in_len else 0.0) for i, wt in taps]
            total = sum(wt for _, wt in taps)
            taps = [(i, wt / total) for i, wt in taps]
        return [(min(max(i, 0), in_len - 1), wt) for i, wt in taps]
    raise ValueError(mode)


def resize(x, out_shape, scales, mode="nearest", coordinate_mode="half_pixel",
           nearest_mode="round_prefer_floor", cubic_a=-0.75, exclude_outside=False,
           extrapolation_value=0.0, roi=None):
    """ONNX Resize with everything resolved: out_shape and scales (one per axis), roi as
    [starts..., ends...] (tf_crop_and_resize). One axis at a time (interpolation is separable);
    with tf_crop_and_resize an output whose source coordinate is outside [0, in-1] on any axis is
    extrapolation_value. Two onnxruntime conventions the specification leaves open: an output of
    the input's shape is the input, and an axis with scale 1 is not resampled."""
    y = np.asarray(x, np.float64)
    r = y.ndim
    outside = np.zeros(tuple(out_shape), bool)
    if tuple(out_shape) == y.shape:
        return y.copy()
    for axis in range(r):
        in_len, out_len, scale = y.shape[axis], out_shape[axis], scales[axis]
        if scale == 1.0:
            continue
        ax_roi = (roi[axis], roi[axis + r]) if roi is not None else (0.0, 1.0)
        rows = []
        for o in range(out_len):
            xf = resize_source_coord(coordinate_mode, o, scale, in_len, out_len, ax_roi)
            if coordinate_mode == "tf_crop_and_resize" and not 0 <= xf <= in_len - 1:
                idx = [slice(None)] * r
                idx[axis] = o
                outside[tuple(idx)] = True
            nm = nearest_mode
            if nm == "floor_up_ceil_down":   # Resize-10/Upsample: per axis, by the scale
                nm = "ceil" if scale < 1 else "floor"
            taps = resize_taps(mode, xf, in_len, nm, cubic_a, exclude_outside)
            rows.append(sum(wt * np.take(y, i, axis=axis) for i, wt in taps))
        y = np.stack(rows, axis=axis) if rows else np.zeros(y.shape[:axis] + (0,) + y.shape[axis + 1:])
    return np.where(outside, extrapolation_value, y)


def resize_output(in_shape, scales=None, sizes=None, axes=None, policy="stretch"):
    """(output shape, per-axis scales) of ONNX Resize from scales or sizes (opset 18 axes and
    keep_aspect_ratio_policy). Output length = floor(in * scale) for scales; sizes give the
    output and scale = out / in, or with a policy one common scale min/max(out/in) and
    output round_half_up(scale * in) on the listed axes."""
    r = len(in_shape)
    axes = list(range(r)) if axes is None else [a % r for a in axes]
    full_scales = [1.0] * r
    out = list(in_shape)
    if scales is not None:
        for a, s in zip(axes, scales):
            full_scales[a] = float(s)
            out[a] = int(math.floor(in_shape[a] * float(s)))
        return out, full_scales
    ratios = {a: s / in_shape[a] for a, s in zip(axes, sizes)}
    if policy == "stretch":
        for a, s in zip(axes, sizes):
            out[a] = int(s)
            full_scales[a] = ratios[a]
        return out, full_scales
    common = min(ratios.values()) if policy == "not_larger" else max(ratios.values())
    for a in axes:
        full_scales[a] = common
        out[a] = int(math.floor(common * in_shape[a] + 0.5))
    return out, full_scales


# ----------------------------------------------------------------------------- CNN-literature ops
def maxout(x, pieces):
    """(N, C*pieces, ...) -> (N, C, ...): out[:, c] is the largest of input channels
    c*pieces .. c*pieces + pieces - 1 (NaN if any of them is NaN), one channel at a time."""
    x = np.asarray(x, np.float64)
    c = x.shape[1] // pieces
    y = np.empty((x.shape[0], c) + x.shape[2:])
    for j in range(c):
        y[:, j] = x[:, j * pieces:(j + 1) * pieces].max(axis=1)   # numpy's max propagates NaN
    return y


def swish(x, alpha=1.0):
    """x * sigmoid(alpha * x), written as x / (1 + exp(-alpha x))."""
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(-alpha * x))
