"""The trainable head as arrays and kernel calls: forward, backward, parameter list.

Python decides (shapes, buffers, which kernel), `fastcnn._kernels.train` computes. Buffers are
allocated once per row count and reused for every batch of that size.

Shapes for a batch of b samples, r = b * positions rows (positions > 1 only for a 1x1-conv head
with an activation before its global pool):
    x0 (r, k0) features -> layer 0 -> z0, a0 (r, n0) [-> mean over positions (b, n0)]
    -> layer 1 -> z1, a1 (b, n1) -> ... -> output (b, n_last)
Weights are held as wt (n, k), out-features by in-features (see train.pyx for why); the
interface (constructor, get_state, set_state, gradients) speaks W (k, n) like the rest of
fastcnn.finetune.
"""
from __future__ import annotations

import numpy as np

from fastcnn._kernels import train as kernels
from fastcnn._kernels.eltwise import ACT_CODES


class _Buffers:
    """Activations and gradients for one row count (see the module docstring for shapes)."""

    def __init__(self, net: "HeadNetwork", rows: int, batch: int):
        self.z, self.a, self.dz, self.dx = [], [], [], []
        scratch = 0
        for i, (wt, _) in enumerate(net.params_wb):
            r = rows if i == 0 else batch
            n, k = wt.shape
            z = np.empty((r, n), np.float32)
            self.z.append(z)
            self.a.append(z if net.codes[i][0] == 0 else np.empty((r, n), np.float32))
            self.dz.append(np.empty((r, n), np.float32))
            self.dx.append(np.empty((r, k), np.float32) if i > 0 else None)
            scratch = max(scratch, k * r + n * r)
        self.scratch = np.empty(max(scratch, 1), np.float32)
        n0 = net.params_wb[0][0].shape[0]
        self.pooled = np.empty((batch, n0), np.float32) if net.positions > 1 else None
        self.dpooled = np.empty((batch, n0), np.float32) if net.positions > 1 else None


class HeadNetwork:
    """Dense layers y = act(x @ W + b), trained in place (W held transposed, see above).

    weights: list of (k, n) float32; biases: list of (n,) float32; activations: list of
    (op name, alpha, beta); train_bias: list of bool (False keeps a bias at zero, untrained).
    positions: rows per sample of layer 0 (mean-pooled after it). logits_last: the loss reads
    the last layer's pre-activation z (sigmoid cross-entropy fused with a Sigmoid activation).
    """

    def __init__(self, weights, biases, activations, train_bias, positions=1, logits_last=False,
                 num_threads=1):
        self.params_wb = [(np.ascontiguousarray(np.asarray(w, np.float32).T),
                           np.ascontiguousarray(b, np.float32).copy()) for w, b in zip(weights, biases)]
        self.codes = [(ACT_CODES[name], float(alpha), float(beta)) for name, alpha, beta in activations]
        self.train_bias = list(train_bias)
        self.positions = int(positions)
        if self.positions > 1 and len(self.params_wb) != 1:
            raise ValueError("HeadNetwork: position pooling is for a single 1x1-conv layer")
        self.logits_last = bool(logits_last)
        self.num_threads = int(num_threads)
        self.grads_wb = [(np.zeros_like(w), np.zeros_like(b)) for w, b in self.params_wb]
        self._buffers = {}

    # ------------------------------------------------------------------ parameters
    def parameters(self):
        """[(param, grad)] as flat views, in a fixed order (weight, bias per layer)."""
        out = []
        for (w, b), (gw, gb), tb in zip(self.params_wb, self.grads_wb, self.train_bias):
            out.append((w.reshape(-1), gw.reshape(-1)))
            if tb:
                out.append((b.reshape(-1), gb.reshape(-1)))
        return out

    def get_state(self):
        """[(W (k, n), b (n,))] copies, first layer to last."""
        return [(np.ascontiguousarray(wt.T), b.copy()) for wt, b in self.params_wb]

    def set_state(self, state):
        """Set the parameters from [(W (k, n), b (n,))] (shapes must match)."""
        for (wt, b), (w2, b2) in zip(self.params_wb, state):
            wt[...] = np.asarray(w2).T
            b[...] = b2

    def gradients(self):
        """[(dL/dW (k, n), dL/db (n,))] copies, after backward."""
        return [(np.ascontiguousarray(gwt.T), gb.copy()) for gwt, gb in self.grads_wb]

    @property
    def shapes(self):
        """[(k, n)] per layer."""
        return [(wt.shape[1], wt.shape[0]) for wt, _ in self.params_wb]

    @property
    def out_features(self) -> int:
        return self.params_wb[-1][0].shape[0]

    def _buffers_for(self, rows: int, batch: int) -> _Buffers:
        key = (rows, batch)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) > 4:
                self._buffers.clear()
            buf = self._buffers[key] = _Buffers(self, rows, batch)
        return buf

    # ------------------------------------------------------------------ compute
    def forward(self, x0: np.ndarray, batch: int) -> np.ndarray:
        """x0 (batch * positions, k0) float32 C-contiguous -> output (batch, n_last): the value the
        loss reads (last activation applied unless logits_last). The array is a reused buffer."""
        buf = self._buffers_for(x0.shape[0], batch)
        self._x0 = x0
        self._buf = buf
        nt = self.num_threads
        x = x0
        last = len(self.params_wb) - 1
        for i, (wt, b) in enumerate(self.params_wb):
            code, alpha, beta = self.codes[i]
            if i == last and self.logits_last:
                code = 0
            kernels.dense_forward(x, wt, b, buf.z[i], buf.a[i] if code else buf.z[i], buf.scratch,
                                  code, alpha, beta, nt)
            x = buf.a[i] if code else buf.z[i]
            if i == 0 and self.positions > 1:
                kernels.mean_positions(x, buf.pooled, nt)
                x = buf.pooled
        return x

    def backward(self, dout: np.ndarray) -> None:
        """dout (batch, n_last): gradient of the loss with respect to forward's output. Fills
        the gradients of every weight and bias (after the last forward call)."""
        buf, nt = self._buf, self.num_threads
        last = len(self.params_wb) - 1
        da = dout
        for i in range(last, -1, -1):
            wt, _ = self.params_wb[i]
            gwt, gb = self.grads_wb[i]
            code, alpha, beta = self.codes[i]
            if i == last and self.logits_last:
                code = 0
            if i == 0 and self.positions > 1:
                kernels.spread_positions(da, buf.dz[0], nt)
                da = buf.dz[0]
            kernels.act_backward(buf.z[i], da, buf.dz[i], code, alpha, beta, nt)
            x = self._x0 if i == 0 else (buf.a[i - 1] if self.codes[i - 1][0] else buf.z[i - 1])
            kernels.dense_backward(x, wt, buf.dz[i], gwt, gb, buf.dx[i], buf.scratch, nt)
            da = buf.dx[i]
        for (_, gb), tb in zip(self.grads_wb, self.train_bias):
            if not tb:
                gb[...] = 0.0

    def predict(self, x0: np.ndarray, batch: int) -> np.ndarray:
        """forward(...) copied out of the reused buffer."""
        return self.forward(x0, batch).copy()
