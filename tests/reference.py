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
