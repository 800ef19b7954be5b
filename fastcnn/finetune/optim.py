"""Optimizers and learning-rate schedules.

SGD: momentum and Nesterov as PyTorch's torch.optim.SGD (dampening 0); weight decay is an L2
     penalty added to the gradient (coupled), as torch.optim.SGD does.
Adam: bias-corrected; weight decay is decoupled (AdamW, Loshchilov & Hutter), as
     torch.optim.AdamW does: decay does not pass through the adaptive scaling, so it acts as a
     true shrinkage of the weights. With weight_decay=0 it is plain Adam.
Weight decay applies to every trained parameter, biases included (PyTorch's default).
The updates are Cython kernels (`fastcnn._kernels.train`), one call per parameter array.
"""
from __future__ import annotations

import math

import numpy as np

from fastcnn._kernels import train as kernels
from fastcnn.errors import FineTuneError


class SGD:
    def __init__(self, params, momentum=0.9, nesterov=False, weight_decay=0.0, num_threads=1):
        """params: list of flat float32 arrays updated in place."""
        if nesterov and momentum <= 0:
            raise FineTuneError("Nesterov momentum needs momentum > 0")
        self.params = params
        self.velocity = [np.zeros_like(p) for p in params]
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.num_threads = num_threads

    def step(self, grads, lr):
        for p, g, v in zip(self.params, grads, self.velocity):
            kernels.sgd_update(p, g, v, lr, self.momentum, self.nesterov, self.weight_decay,
                               self.num_threads)


class Adam:
    def __init__(self, params, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, num_threads=1):
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1) or not eps > 0:
            raise FineTuneError(f"Adam needs 0 <= betas < 1 and eps > 0, got betas={betas}, eps={eps}")
        self.params = params
        self.m1 = [np.zeros_like(p) for p in params]
        self.m2 = [np.zeros_like(p) for p in params]
        self.beta1, self.beta2, self.eps = b1, b2, float(eps)
        self.weight_decay = float(weight_decay)
        self.num_threads = num_threads
        self.t = 0

    def step(self, grads, lr):
        self.t += 1
        c1 = 1.0 - self.beta1 ** self.t
        c2 = 1.0 - self.beta2 ** self.t
        for p, g, a, b in zip(self.params, grads, self.m1, self.m2):
            kernels.adam_update(p, g, a, b, lr, self.beta1, self.beta2, self.eps, c1, c2,
                                self.weight_decay, self.num_threads)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


# Learning-rate schedules: factor(epoch, epochs, step_size, gamma, min_ratio) for 0-based epochs,
# applied per epoch. "step" and "cosine" follow torch.optim.lr_scheduler StepLR and
# CosineAnnealingLR (T_max = epochs, eta_min = min_ratio * lr).
def _constant(epoch, epochs, step_size, gamma, min_ratio):
    return 1.0


def _step(epoch, epochs, step_size, gamma, min_ratio):
    return gamma ** (epoch // step_size)


def _cosine(epoch, epochs, step_size, gamma, min_ratio):
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))


SCHEDULES = {"constant": _constant, "step": _step, "cosine": _cosine}
