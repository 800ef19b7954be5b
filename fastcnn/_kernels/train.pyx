"""Training kernels for fine-tuning dense heads: forward and backward of dense layers and their
activations, the losses (softmax / sigmoid cross-entropy, mean squared error) fused with their
gradients, position pooling for 1x1-conv heads, and the SGD / Adam updates.

Layouts (row-major float32 throughout):
    x  (m, k)   layer input, one row per sample (or per sample and position)
    w  (k, n)   weight, in-features by out-features (the layout DenseStep runs)
    b  (n,)     bias
    z  (m, n)   pre-activation x @ w + b;  a (m, n) = act(z)

Every matrix product goes through `product` below; it is the only place that names a GEMM, so
moving training onto another GEMM kernel is a one-line change there. The Python wrappers check
every shape before releasing the GIL (kernels run without bounds checks).
"""
cimport cython
from cython.parallel cimport prange
from libc.math cimport exp, log, log1p, fabs, sqrt, expf, tanhf, sqrtf

from fastcnn._kernels.gemm cimport sgemm_plain, sgemm_rows
from fastcnn._kernels.act cimport *
from fastcnn._kernels.step cimport PARALLEL_MIN, threads_for

import numpy as np

cdef enum:
    # Below this many multiply-adds a product runs on one thread. Head training is many small
    # products (batch x features x classes); a parallel region per product costs more than it
    # saves at that size, and much more when other processes hold the cores.
    PRODUCT_PARALLEL_MIN = 1 << 21


cdef inline void product(const float *a, Py_ssize_t lda, const float *b, Py_ssize_t ldb,
                         float *c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                         bint accumulate, int num_threads) noexcept nogil:
    """c (m, n) [+]= a (m, k) @ b (k, n): the one matrix product of training, on inference's
    blocked micro-kernel GEMM (the row kernel only for accumulation, which no caller uses now)."""
    cdef int nt = num_threads if m * k * n >= PRODUCT_PARALLEL_MIN else 1
    if accumulate:
        sgemm_rows(a, lda, b, ldb, c, ldc, m, k, n, True, nt)
    else:
        sgemm_plain(a, lda, b, ldb, c, ldc, m, k, n, nt)


cdef void transpose_into(const float *src, Py_ssize_t rows, Py_ssize_t cols, float *dst,
                         int num_threads) noexcept nogil:
    """dst (cols, rows) = src (rows, cols)^T; 32x32 tiles keep both sides in cache."""
    cdef Py_ssize_t tile, i, j, i0, i1, j0, j1
    cdef Py_ssize_t tiles = (rows + 31) // 32
    cdef int nt = num_threads if rows * cols >= 8 * PARALLEL_MIN else 1
    for tile in prange(tiles, num_threads=nt, schedule="static"):
        i0 = tile * 32
        i1 = i0 + 32 if i0 + 32 < rows else rows
        j0 = 0
        while j0 < cols:
            j1 = j0 + 32 if j0 + 32 < cols else cols
            for i in range(i0, i1):
                for j in range(j0, j1):
                    dst[j * rows + i] = src[i * cols + j]
            j0 = j0 + 32


cdef inline float act_grad(float z, int kind, float alpha, float beta) noexcept nogil:
    """d act(z) / dz for the activations a trainable layer may carry (see TRAINABLE_ACTS).
    At kinks the derivative of the left piece is used (ReLU'(0) = 0, as PyTorch does)."""
    cdef float s, t
    if kind == ACT_RELU:
        return 1.0 if z > 0 else 0.0
    elif kind == ACT_LEAKY:
        return 1.0 if z > 0 else alpha
    elif kind == ACT_CLIP:
        return 1.0 if (z > alpha and z < beta) else 0.0
    elif kind == ACT_SIGMOID:
        s = sigmoidf(z)
        return s * (1.0 - s)
    elif kind == ACT_TANH:
        t = tanhf(z)
        return 1.0 - t * t
    elif kind == ACT_HARDSIGMOID:
        t = alpha * z + beta
        return alpha if (t > 0 and t < 1) else 0.0
    elif kind == ACT_HARDSWISH:
        if z < -3.0:
            return 0.0
        if z > 3.0:
            return 1.0
        return (2.0 * z + 3.0) * (1.0 / 6.0)
    elif kind == ACT_ELU:
        return 1.0 if z > 0 else alpha * expf(z)
    return 1.0


# Activation codes (eltwise.ACT_CODES values) whose gradient act_grad knows.
TRAINABLE_ACTS = (ACT_NONE, ACT_IDENTITY, ACT_RELU, ACT_LEAKY, ACT_CLIP, ACT_SIGMOID, ACT_TANH,
                  ACT_HARDSIGMOID, ACT_HARDSWISH, ACT_ELU)


def _check_act(int act):
    if act not in TRAINABLE_ACTS:
        raise ValueError(f"activation code {act} has no gradient kernel")


# ----------------------------------------------------------------------------- dense layers
# The weight is held as wt (n, k), out-features by in-features (PyTorch's Linear layout), so
# that every product writes rows long in the large dimension: the row kernel vectorises over
# its output's columns, and the class count n is often tiny (10) while k and the batch are not.
#     forward  z^T (n, m) = wt (n, k) @ x^T (k, m)
#     dW^T     (n, k)     = dz^T (n, m) @ x (m, k)
#     dX       (m, k)     = dz (m, n) @ wt (n, k)

def dense_forward(const float[:, ::1] x, const float[:, ::1] wt, const float[::1] b,
                  float[:, ::1] z, float[:, ::1] a, float[::1] scratch, int act=0,
                  float alpha=0.0, float beta=0.0, int num_threads=1):
    """z (m, n) = x (m, k) @ wt (n, k)^T + b (n,);  a (m, n) = act(z).

    a may be the same array as z (no activation needed after). scratch holds at least
    k*m + n*m floats (x^T and z^T)."""
    cdef Py_ssize_t m = x.shape[0], k = x.shape[1], n = wt.shape[0], i, j
    cdef float v
    cdef float *zt
    cdef int nt
    _check_act(act)
    if (wt.shape[1] != k or b.shape[0] != n or z.shape[0] != m or z.shape[1] != n
            or a.shape[0] != m or a.shape[1] != n):
        raise ValueError("dense_forward: shapes do not fit")
    if scratch.shape[0] < k * m + n * m:
        raise ValueError("dense_forward: scratch too small")
    if m == 0 or n == 0:
        return
    nt = threads_for(m * n, num_threads)
    with nogil:
        zt = &scratch[k * m]
        if k > 0:
            transpose_into(&x[0, 0], m, k, &scratch[0], num_threads)
            product(&wt[0, 0], k, &scratch[0], m, zt, m, n, k, m, False, num_threads)
        for i in prange(m, num_threads=nt, schedule="static"):
            for j in range(n):
                v = (zt[j * m + i] if k > 0 else 0.0) + b[j]
                z[i, j] = v
                a[i, j] = apply_act(v, act, alpha, beta)


def act_backward(const float[:, ::1] z, const float[:, ::1] da, float[:, ::1] dz, int act=0,
                 float alpha=0.0, float beta=0.0, int num_threads=1):
    """dz (m, n) = da (m, n) * act'(z (m, n)). dz may be the same array as da."""
    cdef Py_ssize_t m = z.shape[0], n = z.shape[1], i, j
    cdef int nt
    _check_act(act)
    if da.shape[0] != m or da.shape[1] != n or dz.shape[0] != m or dz.shape[1] != n:
        raise ValueError("act_backward: shapes do not fit")
    if m == 0 or n == 0:
        return
    nt = threads_for(m * n, num_threads)
    with nogil:
        if act == ACT_NONE or act == ACT_IDENTITY:
            for i in prange(m, num_threads=nt, schedule="static"):
                for j in range(n):
                    dz[i, j] = da[i, j]
        else:
            for i in prange(m, num_threads=nt, schedule="static"):
                for j in range(n):
                    dz[i, j] = da[i, j] * act_grad(z[i, j], act, alpha, beta)


def dense_backward(const float[:, ::1] x, const float[:, ::1] wt, const float[:, ::1] dz,
                   float[:, ::1] dwt, float[::1] db, float[:, ::1] dx, float[::1] scratch,
                   int num_threads=1):
    """Gradients of z = x @ wt^T + b given dz (m, n):
        dwt (n, k) = dz^T @ x,   db (n,) = sum over rows of dz,   dx (m, k) = dz @ wt.

    dx may be None (the first trainable layer needs no input gradient). dz^T (n, m) is copied
    into scratch (at least n*m floats); x and wt are used in place."""
    cdef Py_ssize_t m = x.shape[0], k = x.shape[1], n = wt.shape[0], i, j
    cdef bint want_dx = dx is not None
    cdef double s
    cdef int nt
    if (wt.shape[1] != k or dz.shape[0] != m or dz.shape[1] != n or dwt.shape[0] != n
            or dwt.shape[1] != k or db.shape[0] != n):
        raise ValueError("dense_backward: shapes do not fit")
    if want_dx and (dx.shape[0] != m or dx.shape[1] != k):
        raise ValueError("dense_backward: dx shape")
    if scratch.shape[0] < n * m:
        raise ValueError("dense_backward: scratch too small")
    if want_dx and k > 0 and (n == 0 or m == 0):
        dx[:, :] = 0.0
    if n == 0:
        return
    nt = threads_for(m * n, num_threads)
    with nogil:
        for j in prange(n, num_threads=nt, schedule="static"):
            s = 0.0
            for i in range(m):
                s = s + dz[i, j]
            db[j] = <float>s
        if k > 0 and m > 0:
            transpose_into(&dz[0, 0], m, n, &scratch[0], num_threads)
            product(&scratch[0], m, &x[0, 0], k, &dwt[0, 0], k, n, m, k, False, num_threads)
            if want_dx:
                product(&dz[0, 0], n, &wt[0, 0], k, &dx[0, 0], k, m, n, k, False, num_threads)
        elif k > 0:
            for j in range(n):
                for i in range(k):
                    dwt[j, i] = 0.0


# ----------------------------------------------------------------------------- position pooling
def mean_positions(const float[:, ::1] a, float[:, ::1] out, int num_threads=1):
    """out (b, n) = mean over p of a (b*p, n) viewed as (b, p, n): the GlobalAveragePool after a
    1x1-conv head whose rows are (sample, position) pairs."""
    cdef Py_ssize_t bsz = out.shape[0], n = out.shape[1], p, i, q, j
    cdef float inv
    cdef int nt
    if bsz == 0 or a.shape[0] % bsz or a.shape[1] != n:
        raise ValueError("mean_positions: shapes do not fit")
    p = a.shape[0] // bsz
    if p == 0 or n == 0:
        raise ValueError("mean_positions: empty")
    inv = 1.0 / p
    nt = threads_for(a.shape[0] * n, num_threads)
    with nogil:
        for i in prange(bsz, num_threads=nt, schedule="static"):
            for j in range(n):
                out[i, j] = 0.0
            for q in range(p):
                for j in range(n):
                    out[i, j] = out[i, j] + a[i * p + q, j]
            for j in range(n):
                out[i, j] = out[i, j] * inv


def spread_positions(const float[:, ::1] dout, float[:, ::1] da, int num_threads=1):
    """Backward of mean_positions: da (b*p, n)[i*p + q] = dout (b, n)[i] / p."""
    cdef Py_ssize_t bsz = dout.shape[0], n = dout.shape[1], p, i, q, j
    cdef float inv
    cdef int nt
    if bsz == 0 or da.shape[0] % bsz or da.shape[1] != n:
        raise ValueError("spread_positions: shapes do not fit")
    p = da.shape[0] // bsz
    if p == 0 or n == 0:
        raise ValueError("spread_positions: empty")
    inv = 1.0 / p
    nt = threads_for(da.shape[0] * n, num_threads)
    with nogil:
        for i in prange(bsz, num_threads=nt, schedule="static"):
            for q in range(p):
                for j in range(n):
                    da[i * p + q, j] = dout[i, j] * inv


# ----------------------------------------------------------------------------- losses
# Each loss kernel writes the gradient of the batch loss (the weighted mean) into its `grad`
# argument and returns (weighted sum of per-sample losses, sum of weights): the batch loss is
# their ratio, and an epoch's loss is the ratio of the sums over its batches.

def softmax_cross_entropy(const float[:, ::1] z, const long long[::1] labels,
                          const float[::1] class_weights, float[:, ::1] grad, int num_threads=1):
    """Softmax cross-entropy of logits z (m, n) against class indices labels (m,).

    loss_i = logsumexp(z_i) - z_i[y_i], computed with the row maximum subtracted (no overflow).
    class_weights (n,) or empty: the batch loss is sum_i w[y_i] loss_i / sum_i w[y_i]
    (PyTorch's CrossEntropyLoss convention). grad (m, n) = w[y_i] (softmax(z_i) - onehot(y_i)) / W.
    """
    cdef Py_ssize_t m = z.shape[0], n = z.shape[1], i, j
    cdef bint weighted = class_weights.shape[0] > 0
    cdef double total_w = 0.0, total = 0.0, zmax, s, lse, wi
    cdef long long y
    cdef int nt
    if labels.shape[0] != m or grad.shape[0] != m or grad.shape[1] != n or n == 0:
        raise ValueError("softmax_cross_entropy: shapes do not fit")
    if weighted and class_weights.shape[0] != n:
        raise ValueError("softmax_cross_entropy: class_weights size")
    for i in range(m):
        if labels[i] < 0 or labels[i] >= n:
            raise ValueError(f"softmax_cross_entropy: label {labels[i]} outside [0, {n})")
    row_loss = np.empty(m, np.float64)
    cdef double[::1] rl = row_loss
    with nogil:
        for i in range(m):
            total_w = total_w + (class_weights[labels[i]] if weighted else 1.0)
    if m == 0 or total_w == 0.0:
        grad[:, :] = 0.0
        return 0.0, total_w
    nt = threads_for(m * n, num_threads)
    with nogil:
        for i in prange(m, num_threads=nt, schedule="static"):
            y = labels[i]
            wi = (class_weights[y] if weighted else 1.0) / total_w
            zmax = z[i, 0]
            for j in range(1, n):
                if z[i, j] > zmax:
                    zmax = z[i, j]
            s = 0.0
            for j in range(n):
                s = s + exp(z[i, j] - zmax)
            lse = zmax + log(s)
            rl[i] = (class_weights[y] if weighted else 1.0) * (lse - z[i, y])
            for j in range(n):
                grad[i, j] = <float>(wi * exp(z[i, j] - lse))
            grad[i, y] = <float>(grad[i, y] - wi)
        for i in range(m):
            total = total + rl[i]
    return total, total_w


cdef _check_dense_targets(str name, const float[:, ::1] out, const float[:, ::1] targets,
                          const float[::1] class_weights, float[:, ::1] grad):
    """Losses with dense targets: targets and grad shaped like out (m, n), class_weights empty
    or (n,)."""
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1]
    if targets.shape[0] != m or targets.shape[1] != n or grad.shape[0] != m or grad.shape[1] != n:
        raise ValueError(f"{name}: shapes do not fit")
    if class_weights.shape[0] > 0 and class_weights.shape[0] != n:
        raise ValueError(f"{name}: class_weights size")


def sigmoid_cross_entropy(const float[:, ::1] z, const float[:, ::1] targets,
                          const float[::1] class_weights, float[:, ::1] grad, int num_threads=1):
    """Binary cross-entropy with logits z (m, n) against targets (m, n) in [0, 1] (multi-label).

    loss_ij = w_j (max(z, 0) - z t + log1p(exp(-|z|))), stable for any z; the batch loss is the
    mean over all m*n entries (PyTorch's BCEWithLogitsLoss(weight=w)). grad = w_j (sigmoid(z) - t) / (m n).
    """
    cdef Py_ssize_t m = z.shape[0], n = z.shape[1], i, j
    cdef bint weighted = class_weights.shape[0] > 0
    cdef double total = 0.0, count = <double>(m * n), inv, v, t, wj, acc
    cdef int nt
    _check_dense_targets("sigmoid_cross_entropy", z, targets, class_weights, grad)
    if m == 0 or n == 0:
        return 0.0, count
    row_loss = np.empty(m, np.float64)
    cdef double[::1] rl = row_loss
    inv = 1.0 / count
    nt = threads_for(m * n, num_threads)
    with nogil:
        for i in prange(m, num_threads=nt, schedule="static"):
            acc = 0.0
            for j in range(n):
                v = z[i, j]
                t = targets[i, j]
                wj = class_weights[j] if weighted else 1.0
                acc = acc + wj * ((v if v > 0 else 0.0) - v * t + log1p(exp(-fabs(v))))
                grad[i, j] = <float>(wj * (_sigmoid(v) - t) * inv)
            rl[i] = acc
        for i in range(m):
            total = total + rl[i]
    return total, count


cdef inline double _sigmoid(double v) noexcept nogil:
    cdef double e
    if v >= 0:
        return 1.0 / (1.0 + exp(-v))
    e = exp(v)
    return e / (1.0 + e)


def mean_squared_error(const float[:, ::1] out, const float[:, ::1] targets,
                       const float[::1] class_weights, float[:, ::1] grad, int num_threads=1):
    """Mean squared error of out (m, n) against targets (m, n): the batch loss is
    sum w_j (out - t)^2 / (m n) (PyTorch's MSELoss when unweighted); grad = 2 w_j (out - t) / (m n)."""
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1], i, j
    cdef bint weighted = class_weights.shape[0] > 0
    cdef double total = 0.0, count = <double>(m * n), inv, d, wj, acc
    cdef int nt
    _check_dense_targets("mean_squared_error", out, targets, class_weights, grad)
    if m == 0 or n == 0:
        return 0.0, count
    row_loss = np.empty(m, np.float64)
    cdef double[::1] rl = row_loss
    inv = 1.0 / count
    nt = threads_for(m * n, num_threads)
    with nogil:
        for i in prange(m, num_threads=nt, schedule="static"):
            acc = 0.0
            for j in range(n):
                d = <double>out[i, j] - targets[i, j]
                wj = class_weights[j] if weighted else 1.0
                acc = acc + wj * d * d
                grad[i, j] = <float>(2.0 * wj * d * inv)
            rl[i] = acc
        for i in range(m):
            total = total + rl[i]
    return total, count


# ----------------------------------------------------------------------------- optimizers
def sgd_update(float[::1] param, const float[::1] grad, float[::1] velocity, float lr,
               float momentum, bint nesterov, float weight_decay, int num_threads=1):
    """One SGD step on a flat parameter (PyTorch's SGD with dampening 0):
        g = grad + weight_decay * param          (L2 penalty, coupled)
        v = momentum * v + g                     (v starts at 0, so the first v is g)
        param -= lr * (g + momentum * v if nesterov else v)
    With momentum 0 this is plain SGD (velocity is still written)."""
    cdef Py_ssize_t size = param.shape[0], i
    cdef float g, v
    cdef int nt
    if grad.shape[0] != size or velocity.shape[0] != size:
        raise ValueError("sgd_update: sizes differ")
    nt = threads_for(size, num_threads)
    with nogil:
        for i in prange(size, num_threads=nt, schedule="static"):
            g = grad[i] + weight_decay * param[i]
            v = momentum * velocity[i] + g
            velocity[i] = v
            if nesterov:
                param[i] = param[i] - lr * (g + momentum * v)
            else:
                param[i] = param[i] - lr * v


def adam_update(float[::1] param, const float[::1] grad, float[::1] m1, float[::1] m2, float lr,
                float beta1, float beta2, float eps, float correction1, float correction2,
                float weight_decay, int num_threads=1):
    """One Adam step with bias correction and decoupled weight decay (AdamW, as PyTorch's AdamW):
        param *= 1 - lr * weight_decay
        m1 = beta1 m1 + (1 - beta1) g;  m2 = beta2 m2 + (1 - beta2) g^2
        param -= (lr / correction1) * m1 / (sqrt(m2) / sqrt(correction2) + eps)
    correction1 = 1 - beta1^t and correction2 = 1 - beta2^t for step t (1-based)."""
    cdef Py_ssize_t size = param.shape[0], i
    cdef float g, a, b, step_size, root_c2, decay
    cdef int nt
    if grad.shape[0] != size or m1.shape[0] != size or m2.shape[0] != size:
        raise ValueError("adam_update: sizes differ")
    if not (correction1 > 0 and correction2 > 0):
        raise ValueError("adam_update: bias corrections must be positive")
    step_size = lr / correction1
    root_c2 = <float>sqrt(correction2)
    decay = 1.0 - lr * weight_decay
    nt = threads_for(size, num_threads)
    with nogil:
        for i in prange(size, num_threads=nt, schedule="static"):
            g = grad[i]
            a = beta1 * m1[i] + (1.0 - beta1) * g
            b = beta2 * m2[i] + (1.0 - beta2) * g * g
            m1[i] = a
            m2[i] = b
            param[i] = param[i] * decay - step_size * a / (sqrtf(b) / root_c2 + eps)

