"""Independent float64 numpy reference of head training, written from the formulas (never calls
fastcnn): dense layers with activations, the three losses, SGD (momentum, Nesterov, L2 decay),
Adam with bias correction and decoupled weight decay, and the epoch loop."""
from __future__ import annotations

import numpy as np


def act(name, z, alpha=0.0, beta=0.0):
    if name == "":
        return z
    if name == "Relu":
        return np.maximum(z, 0)
    if name == "LeakyRelu":
        return np.where(z > 0, z, alpha * z)
    if name == "Clip":
        return np.clip(z, alpha, beta)
    if name == "Sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "Tanh":
        return np.tanh(z)
    if name == "HardSigmoid":
        return np.clip(alpha * z + beta, 0, 1)
    if name == "HardSwish":
        return z * np.clip(z / 6 + 0.5, 0, 1)
    if name == "Elu":
        return np.where(z > 0, z, alpha * (np.exp(z) - 1))
    raise ValueError(name)


def act_grad(name, z, alpha=0.0, beta=0.0):
    if name == "":
        return np.ones_like(z)
    if name == "Relu":
        return (z > 0).astype(z.dtype)
    if name == "LeakyRelu":
        return np.where(z > 0, 1.0, alpha)
    if name == "Clip":
        return ((z > alpha) & (z < beta)).astype(z.dtype)
    if name == "Sigmoid":
        s = 1 / (1 + np.exp(-z))
        return s * (1 - s)
    if name == "Tanh":
        return 1 - np.tanh(z) ** 2
    if name == "HardSigmoid":
        t = alpha * z + beta
        return np.where((t > 0) & (t < 1), alpha, 0.0)
    if name == "HardSwish":
        return np.where(z < -3, 0.0, np.where(z > 3, 1.0, (2 * z + 3) / 6))
    if name == "Elu":
        return np.where(z > 0, 1.0, alpha * np.exp(z))
    raise ValueError(name)


def forward(layers, x, positions=1):
    """layers: [(W (k, n), b (n,), act name, alpha, beta)]; x (rows, k0). Returns (out, cache)."""
    cache = []
    h = np.asarray(x, np.float64)
    for i, (w, b, name, alpha, beta) in enumerate(layers):
        z = h @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        a = act(name, z, alpha, beta)
        cache.append((h, z))
        h = a
        if i == 0 and positions > 1:
            h = h.reshape(-1, positions, h.shape[1]).mean(axis=1)
    return h, cache


def backward(layers, cache, dout, positions=1):
    """Gradients [(dW, db)] of the layers given d loss / d out."""
    grads = [None] * len(layers)
    da = dout
    for i in range(len(layers) - 1, -1, -1):
        w, b, name, alpha, beta = layers[i]
        h, z = cache[i]
        if i == 0 and positions > 1:
            da = np.repeat(da, positions, axis=0) / positions
        dz = da * act_grad(name, z, alpha, beta)
        grads[i] = (h.T @ dz, dz.sum(axis=0))
        da = dz @ np.asarray(w, np.float64).T
    return grads


def softmax_xent(z, y, class_w=None):
    """Mean (weighted: sum w_y l / sum w_y) cross-entropy and its gradient wrt z."""
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    logp = z - lse
    w = np.ones(len(y)) if class_w is None else np.asarray(class_w, np.float64)[y]
    losses = -logp[np.arange(len(y)), y]
    total = w.sum()
    p = np.exp(logp)
    p[np.arange(len(y)), y] -= 1
    return float((w * losses).sum() / total), p * (w / total)[:, None]


def sigmoid_xent(z, t, class_w=None):
    z = np.asarray(z, np.float64)
    t = np.asarray(t, np.float64)
    w = np.ones(z.shape[1]) if class_w is None else np.asarray(class_w, np.float64)
    l = w * (np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))
    return float(l.mean()), w * (1 / (1 + np.exp(-z)) - t) / z.size


def mse(o, t, class_w=None):
    o = np.asarray(o, np.float64)
    t = np.asarray(t, np.float64)
    w = np.ones(o.shape[1]) if class_w is None else np.asarray(class_w, np.float64)
    d = o - t
    return float((w * d * d).mean()), 2 * w * d / o.size


class SGD:
    def __init__(self, momentum, nesterov, wd):
        self.momentum, self.nesterov, self.wd, self.v = momentum, nesterov, wd, {}

    def update(self, key, p, g, lr):
        g = g + self.wd * p
        v = self.momentum * self.v.get(key, np.zeros_like(p)) + g
        self.v[key] = v
        return p - lr * (g + self.momentum * v if self.nesterov else v)


class AdamW:
    def __init__(self, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
        self.b1, self.b2, self.eps, self.wd = b1, b2, eps, wd
        self.m, self.v, self.t = {}, {}, 0

    def new_step(self):
        self.t += 1

    def update(self, key, p, g, lr):
        p = p * (1 - lr * self.wd)
        m = self.b1 * self.m.get(key, 0.0) + (1 - self.b1) * g
        v = self.b2 * self.v.get(key, 0.0) + (1 - self.b2) * g * g
        self.m[key], self.v[key] = m, v
        mhat = m / (1 - self.b1 ** self.t)
        vhat = v / (1 - self.b2 ** self.t)
        return p - lr * mhat / (np.sqrt(vhat) + self.eps)


def train(layers, x, y, loss, opt, lr, epochs, batch_size, seed):
    """The fine-tuning loop as documented: epoch order from default_rng([seed, 1]). Returns
    (layers, epoch losses)."""
    layers = [(np.asarray(w, np.float64), np.asarray(b, np.float64), n, a, bb)
              for w, b, n, a, bb in layers]
    rng = np.random.default_rng([seed, 1])
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        total = weight = 0.0
        for s in range(0, len(x), batch_size):
            idx = order[s:s + batch_size]
            out, cache = forward(layers, x[idx])
            value, dout = loss(out, y[idx])
            total += value * len(idx)
            weight += len(idx)
            grads = backward(layers, cache, dout)
            if hasattr(opt, "new_step"):
                opt.new_step()
            new = []
            for i, ((w, b, n, a, bb), (gw, gb)) in enumerate(zip(layers, grads)):
                new.append((opt.update((i, "w"), w, gw, lr), opt.update((i, "b"), b, gb, lr), n, a, bb))
            layers = new
        losses.append(total / weight)
    return layers, losses
