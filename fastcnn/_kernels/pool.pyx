"""Pooling kernels, NCHW: windowed max/min/average/Lp/stochastic and global average/max/Lp.

Windows follow the convolution geometry (kernel, stride, dilation, pads). Positions in the
padding are skipped; the average's divisor is either the number of real positions
(count_include_pad=0) or the number of positions inside the padded input (count_include_pad=1;
with ceil_mode a window may run past the end padding, and those positions never count).
1-D pooling runs as 2-D with a height of 1.
"""
from cython.parallel cimport prange
from libc.math cimport powf, sqrtf, fabsf, INFINITY

from fastcnn._kernels.step cimport PARALLEL_MIN, Step
from fastcnn._kernels.simd cimport *
from fastcnn._kernels.simd_extra cimport (vf8_load_even, vf8_max_nan, vf8_min_nan, f32_max_nan,
                                          f32_min_nan)

cdef enum:
    POOL_MAX = 0
    POOL_MIN = 1
    POOL_AVG = 2
    POOL_LP = 3
    POOL_STOCHASTIC = 4

POOL_CODES = {"MaxPool": POOL_MAX, "MinPool": POOL_MIN, "AveragePool": POOL_AVG,
              "LpPool": POOL_LP, "StochasticPool": POOL_STOCHASTIC,
              "GlobalMaxPool": POOL_MAX, "GlobalAveragePool": POOL_AVG, "GlobalLpPool": POOL_LP}


cdef enum:
    PATH_REFERENCE = 0
    PATH_FAST = 1
    PATH_TWO_PHASE = 2


POOL_PATHS = {"reference": PATH_REFERENCE, "fast": PATH_FAST, "two_phase": PATH_TWO_PHASE}


cdef struct PoolGeom:
    Py_ssize_t k_h, k_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dil_h, dil_w
    int kind
    bint count_include_pad
    float p


cdef inline float lp_pow(float v, float p) noexcept nogil:
    if p == 2:
        return v * v
    if p == 1:
        return fabsf(v)
    return powf(fabsf(v), p)


cdef inline float lp_root(float s, float p) noexcept nogil:
    if p == 2:
        return sqrtf(s)
    if p == 1:
        return s
    return powf(s, 1.0 / p)


cdef inline float pool_window(const float *xp, Py_ssize_t h_in, Py_ssize_t w_in,
                              const PoolGeom *g, Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """One output of one plane xp (h_in, w_in): the window at (oh, ow), every tap bounds-checked
    (the reference loop, and the edges of the fast path)."""
    cdef Py_ssize_t kh, kw, ih, iw, count = 0, ph, pw
    cdef Py_ssize_t h0 = oh * g.stride_h - g.pad_top, w0 = ow * g.stride_w - g.pad_left
    cdef float acc, v, wsum = 0.0
    if g.kind == POOL_MAX:
        acc = -INFINITY
    elif g.kind == POOL_MIN:
        acc = INFINITY
    else:
        acc = 0.0
    for kh in range(g.k_h):
        ih = h0 + kh * g.dil_h
        if ih < 0 or ih >= h_in:
            continue
        for kw in range(g.k_w):
            iw = w0 + kw * g.dil_w
            if iw < 0 or iw >= w_in:
                continue
            v = xp[ih * w_in + iw]
            count = count + 1
            if g.kind == POOL_MAX:
                if v > acc or v != v:
                    acc = v
            elif g.kind == POOL_MIN:
                if v < acc or v != v:
                    acc = v
            elif g.kind == POOL_AVG:
                acc = acc + v
            elif g.kind == POOL_LP:
                acc = acc + lp_pow(v, g.p)
            else:  # stochastic pooling at inference: sum(v^2) / sum(v) for v >= 0
                if v > 0:
                    acc = acc + v * v
                    wsum = wsum + v
                elif v != v:
                    acc = v
    if g.kind == POOL_AVG:
        if g.count_include_pad:
            # positions inside the padded input, clipped at its end
            ph = 0
            for kh in range(g.k_h):
                if h0 + kh * g.dil_h < h_in + g.pad_bottom:
                    ph = ph + 1
            pw = 0
            for kw in range(g.k_w):
                if w0 + kw * g.dil_w < w_in + g.pad_right:
                    pw = pw + 1
            count = ph * pw
        acc = acc / count if count > 0 else 0.0
    elif g.kind == POOL_LP:
        acc = lp_root(acc, g.p)
    elif g.kind == POOL_STOCHASTIC:
        if acc == acc:
            acc = acc / wsum if wsum > 0 else 0.0
    return acc


cdef void pool_plane_reference(const float *xp, float *op, Py_ssize_t h_in, Py_ssize_t w_in,
                               Py_ssize_t h_out, Py_ssize_t w_out,
                               const PoolGeom *g) noexcept nogil:
    """op (h_out, w_out) = every window of xp (h_in, w_in), one bounds-checked tap at a time."""
    cdef Py_ssize_t oh, ow
    for oh in range(h_out):
        for ow in range(w_out):
            op[oh * w_out + ow] = pool_window(xp, h_in, w_in, g, oh, ow)


cdef inline vf8 combine8(vf8 acc, vf8 v, int kind) noexcept nogil:
    if kind == POOL_MAX:
        return vf8_max_nan(acc, v)
    if kind == POOL_MIN:
        return vf8_min_nan(acc, v)
    return vf8_add(acc, v)


cdef inline float combine1(float acc, float v, int kind) noexcept nogil:
    if kind == POOL_MAX:
        return f32_max_nan(acc, v)
    if kind == POOL_MIN:
        return f32_min_nan(acc, v)
    return acc + v


cdef inline vf8 chunk8(const float *xr, Py_ssize_t w_in, Py_ssize_t kh_lo, Py_ssize_t kh_hi,
                       Py_ssize_t k_w, Py_ssize_t sw, int kind, vf8 vinit,
                       vf8 vcount) noexcept nogil:
    """8 consecutive interior outputs (stride sw = 1 or 2) whose windows start at xr + kh*w_in
    (+ sw*lane): taps in the order (kh, kw), averages divided by vcount."""
    cdef Py_ssize_t kh, kw
    cdef const float *xt
    cdef vf8 vacc = vinit
    for kh in range(kh_lo, kh_hi):
        xt = xr + kh * w_in
        for kw in range(k_w):
            vacc = combine8(vacc, vf8_load(xt + kw) if sw == 1 else vf8_load_even(xt + kw), kind)
    if kind == POOL_AVG:
        vacc = vf8_div(vacc, vcount)
    return vacc


cdef inline float window1(const float *xr, Py_ssize_t w_in, Py_ssize_t kh_lo, Py_ssize_t kh_hi,
                          Py_ssize_t kw_lo, Py_ssize_t kw_hi, int kind, float init,
                          Py_ssize_t count) noexcept nogil:
    """One output whose window starts at xr + kh*w_in, taps kh in [kh_lo, kh_hi) and kw in
    [kw_lo, kw_hi) (all inside the input), in the order (kh, kw); no branches per tap."""
    cdef Py_ssize_t kh, kw
    cdef float acc = init
    for kh in range(kh_lo, kh_hi):
        for kw in range(kw_lo, kw_hi):
            acc = combine1(acc, xr[kh * w_in + kw], kind)
    if kind == POOL_AVG:
        return acc / count if count > 0 else 0.0
    return acc


cdef void pool_plane_fast(const float *xp, float *op, Py_ssize_t h_in, Py_ssize_t w_in,
                          Py_ssize_t h_out, Py_ssize_t w_out, const PoolGeom *g,
                          const float *x_end) noexcept nogil:
    """Max/min/average pooling without dilation: op (h_out, w_out) from xp (h_in, w_in).

    Per output row the taps kh inside the input are found once. The columns whose whole window
    lies inside the row (the interior) are computed 8 at a time (stride 1: plain loads; stride
    2: even-lane loads; a last partial chunk is recomputed overlapping the previous one), the
    others one at a time over their clipped window, without a branch per tap. Taps are combined
    in the reference order (kh, kw), so results are bit-identical to the reference loop.
    x_end: end of the whole input (a stride-2 load reads one float past its last tap)."""
    cdef Py_ssize_t oh, ow, kh, kh_lo, kh_hi, kw_lo, kw_hi, h0, w0, ow_lo, ow_hi, ph, pw, count
    cdef Py_ssize_t k_w = g.k_w, sw = g.stride_w, pl = g.pad_left, w_end = w_in + g.pad_right
    cdef int kind = g.kind
    cdef bint vec = sw <= 2
    cdef const float *xr
    cdef float *orow
    cdef float init
    cdef vf8 vinit, vcount
    init = -INFINITY if kind == POOL_MAX else (INFINITY if kind == POOL_MIN else 0.0)
    vinit = vf8_set1(init)
    # interior columns: 0 <= ow*sw - pl and ow*sw - pl + k_w <= w_in
    ow_lo = min(w_out, (pl + sw - 1) // sw)
    ow_hi = (w_in - k_w + pl) // sw + 1 if w_in - k_w + pl >= 0 else 0
    ow_hi = max(ow_lo, min(w_out, ow_hi))
    for oh in range(h_out):
        orow = op + oh * w_out
        h0 = oh * g.stride_h - g.pad_top
        kh_lo = -h0 if h0 < 0 else 0
        kh_hi = min(g.k_h, h_in - h0)
        if kh_hi < kh_lo:
            kh_hi = kh_lo
        ph = kh_hi - kh_lo
        if g.count_include_pad:
            ph = 0
            for kh in range(g.k_h):
                if h0 + kh < h_in + g.pad_bottom:
                    ph = ph + 1
        xr = xp + h0 * w_in
        vcount = vf8_set1(<float>(ph * k_w))
        ow = 0
        while ow < w_out:
            if ow == ow_lo:
                # the interior; the last stride-2 chunk reads up to float
                # (kh_hi-1)*w_in + 2*(ow_hi-8) - pl + (k_w-1) + 15 of xr
                if vec and ow_hi - ow_lo >= 8 and (sw == 1 or xr + (kh_hi - 1) * w_in
                                                   + 2 * ow_hi - pl + k_w - 2 < x_end):
                    while ow + 8 <= ow_hi:
                        vf8_store(orow + ow, chunk8(xr + ow * sw - pl, w_in, kh_lo, kh_hi, k_w,
                                                    sw, kind, vinit, vcount))
                        ow = ow + 8
                    if ow < ow_hi:
                        vf8_store(orow + ow_hi - 8, chunk8(xr + (ow_hi - 8) * sw - pl, w_in,
                                                           kh_lo, kh_hi, k_w, sw, kind, vinit,
                                                           vcount))
                else:
                    while ow < ow_hi:
                        orow[ow] = window1(xr + ow * sw - pl, w_in, kh_lo, kh_hi, 0, k_w, kind,
                                           init, ph * k_w)
                        ow = ow + 1
                ow = ow_hi
                if ow >= w_out:
                    break
            w0 = ow * sw - pl
            kw_lo = -w0 if w0 < 0 else 0
            kw_hi = min(k_w, w_in - w0)
            if kw_hi < kw_lo:
                kw_hi = kw_lo
            pw = kw_hi - kw_lo
            if g.count_include_pad:
                pw = max(0, min(k_w, w_end - w0))
            count = ph * pw if g.count_include_pad else (kh_hi - kh_lo) * (kw_hi - kw_lo)
            orow[ow] = window1(xr + w0, w_in, kh_lo, kh_hi, kw_lo, kw_hi, kind, init, count)
            ow = ow + 1


cdef enum:
    ROW_FLOATS = 2048   # the two-phase max/min row buffer (on the stack): 8 KB, stays in L1


cdef inline void reduce_rows(const float *x, Py_ssize_t w_in, Py_ssize_t rows, Py_ssize_t cols,
                             int kind, float *t) noexcept nogil:
    """t[c] = max (min) over r < rows of x[r*w_in + c], c < cols (rows >= 1)."""
    cdef Py_ssize_t c, r
    cdef vf8 v
    cdef float a
    if cols >= 8:
        c = 0
        while True:
            v = vf8_load(x + c)
            for r in range(1, rows):
                v = combine8(v, vf8_load(x + r * w_in + c), kind)
            vf8_store(t + c, v)
            if c + 8 == cols:
                break
            c = min(c + 8, cols - 8)   # a last partial chunk overlaps the one before
        return
    for c in range(cols):
        a = x[c]
        for r in range(1, rows):
            a = combine1(a, x[r * w_in + c], kind)
        t[c] = a


cdef inline void reduce_cols(const float *t, Py_ssize_t n, Py_ssize_t sw, Py_ssize_t k_w,
                             int kind, float *o) noexcept nogil:
    """o[j] = max (min) over kw < k_w of t[j*sw + kw], j < n. t holds 16 readable floats past
    its last tap (the stride-2 even-lane loads)."""
    cdef Py_ssize_t j, kw
    cdef vf8 v
    cdef float a
    if n >= 8 and sw <= 2:
        j = 0
        while True:
            if sw == 1:
                v = vf8_load(t + j)
                for kw in range(1, k_w):
                    v = combine8(v, vf8_load(t + j + kw), kind)
            else:
                v = vf8_load_even(t + 2 * j)
                for kw in range(1, k_w):
                    v = combine8(v, vf8_load_even(t + 2 * j + kw), kind)
            vf8_store(o + j, v)
            if j + 8 == n:
                break
            j = min(j + 8, n - 8)
        return
    for j in range(n):
        a = t[j * sw]
        for kw in range(1, k_w):
            a = combine1(a, t[j * sw + kw], kind)
        o[j] = a


cdef void pool_plane_two_phase(const float *xp, float *op, Py_ssize_t h_in, Py_ssize_t w_in,
                               Py_ssize_t h_out, Py_ssize_t w_out,
                               const PoolGeom *g) noexcept nogil:
    """Max/min pooling without dilation, in two passes per output row: the k_h input rows are
    reduced into a padded row t (padding columns hold the neutral -inf/+inf), then each output
    is the reduction of k_w consecutive (stride 1) or even-lane (stride 2) values of t. Both
    passes run 8 lanes at a time with no edge cases. When the windows tile the rows exactly
    (no left padding, k_w == stride_w, every row window inside the input), several output rows
    share one pass over a stacked t. Needs (w_out-1)*stride_w + k_w + 16 <= ROW_FLOATS."""
    cdef float t[ROW_FLOATS]
    cdef Py_ssize_t sw = g.stride_w, sh = g.stride_h, k_w = g.k_w, pl = g.pad_left
    cdef Py_ssize_t need = (w_out - 1) * sw + k_w, wc, c, oh, h0, kh_lo, kh_hi, rows, r
    cdef int kind = g.kind
    cdef float init = -INFINITY if kind == POOL_MAX else INFINITY
    cdef bint tight = (pl == 0 and k_w == sw and w_in >= need and g.pad_top == 0
                       and (h_out - 1) * sh + g.k_h <= h_in)
    wc = min(w_in, need - pl)     # input columns any window reads
    if tight:
        rows = max(1, (ROW_FLOATS - 16) // need)
        oh = 0
        while oh < h_out:
            rows = min(rows, h_out - oh)
            for r in range(rows):
                reduce_rows(xp + (oh + r) * sh * w_in, w_in, g.k_h, need, kind, t + r * need)
            reduce_cols(t, rows * w_out, sw, k_w, kind, op + oh * w_out)
            oh = oh + rows
        return
    for c in range(pl):
        t[c] = init
    for c in range(pl + wc, need + 16):
        t[c] = init
    for oh in range(h_out):
        h0 = oh * sh - g.pad_top
        kh_lo = -h0 if h0 < 0 else 0
        kh_hi = min(g.k_h, h_in - h0)
        if kh_hi > kh_lo:
            reduce_rows(xp + (h0 + kh_lo) * w_in, w_in, kh_hi - kh_lo, wc, kind, t + pl)
        else:
            for c in range(pl, pl + wc):
                t[c] = init
        reduce_cols(t, w_out, sw, k_w, kind, op + oh * w_out)


cdef inline void pool_plane(const float *xp, float *op, Py_ssize_t h_in, Py_ssize_t w_in,
                            Py_ssize_t h_out, Py_ssize_t w_out, const PoolGeom *g, int path,
                            const float *x_end) noexcept nogil:
    if path == PATH_TWO_PHASE:
        pool_plane_two_phase(xp, op, h_in, w_in, h_out, w_out, g)
    elif path == PATH_FAST:
        pool_plane_fast(xp, op, h_in, w_in, h_out, w_out, g, x_end)
    else:
        pool_plane_reference(xp, op, h_in, w_in, h_out, w_out, g)


cdef void pool2d_kernel(const float[:, :, :, ::1] x, float[:, :, :, ::1] out, PoolGeom g,
                        int path, int num_threads) noexcept nogil:
    """x: (n, c, h_in, w_in) -> out: (n, c, h_out, w_out), one window per output position.
    path: PATH_TWO_PHASE (max/min), PATH_FAST (max/min/average) or PATH_REFERENCE."""
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h_in = x.shape[2], w_in = x.shape[3]
    cdef Py_ssize_t h_out = out.shape[2], w_out = out.shape[3], planes = n * c, job
    cdef Py_ssize_t taps = planes * h_out * w_out * g.k_h * g.k_w
    cdef const float *x0 = &x[0, 0, 0, 0]
    cdef const float *x_end = x0 + planes * h_in * w_in
    cdef float *o0 = &out[0, 0, 0, 0]
    # the fast loop costs ~0.1 ns per tap, the reference ~5: a second thread only when the layer
    # takes over ~10 us (workers spin between layers, so starting a region costs a few us; and
    # the input, written by a parallel conv, is half in the other core's cache anyway: edge CNN
    # batch 16, 2 threads, max pools median 0.20 / 0.12 / 0.10 -> 0.11 / 0.07 / 0.05 ms)
    cdef int nt = (num_threads if taps >= (131072 if path != PATH_REFERENCE else PARALLEL_MIN)
                   and planes > 1 else 1)
    if nt <= 1:
        for job in range(planes):
            pool_plane(x0 + job * h_in * w_in, o0 + job * h_out * w_out, h_in, w_in, h_out,
                       w_out, &g, path, x_end)
        return
    for job in prange(planes, num_threads=nt, schedule="static"):
        pool_plane(x0 + job * h_in * w_in, o0 + job * h_out * w_out, h_in, w_in, h_out, w_out,
                   &g, path, x_end)


cdef class Pool2dStep(Step):
    """Windowed pooling of x (n, c, h_in, w_in) into out (n, c, h_out, w_out)."""
    cdef const float[:, :, :, ::1] x
    cdef float[:, :, :, ::1] out
    cdef PoolGeom g
    cdef int path
    cdef readonly str path_name     # the loop that runs (POOL_PATHS)

    def __init__(self, const float[:, :, :, ::1] x, float[:, :, :, ::1] out, int kind, kernel,
                 strides, pads, dilations, bint count_include_pad=False, float p=2.0,
                 str path=None):
        """pads: (top, left, bottom, right). path: None for the fastest that applies, or a name
        of POOL_PATHS (tests; ValueError when it does not apply)."""
        self.x, self.out = x, out
        self.g.k_h, self.g.k_w = kernel
        self.g.stride_h, self.g.stride_w = strides
        self.g.pad_top, self.g.pad_left, self.g.pad_bottom, self.g.pad_right = pads
        self.g.dil_h, self.g.dil_w = dilations
        self.g.kind, self.g.count_include_pad, self.g.p = kind, count_include_pad, p
        if x.shape[0] != out.shape[0] or x.shape[1] != out.shape[1]:
            raise ValueError("Pool2dStep: batch/channels differ")
        if min(self.g.k_h, self.g.k_w, self.g.stride_h, self.g.stride_w, self.g.dil_h, self.g.dil_w) < 1:
            raise ValueError("Pool2dStep: bad window")
        applies = [PATH_REFERENCE]
        if kind in (POOL_MAX, POOL_MIN, POOL_AVG) and self.g.dil_h == 1 and self.g.dil_w == 1:
            applies.append(PATH_FAST)
            if kind != POOL_AVG and (out.shape[3] - 1) * self.g.stride_w + self.g.k_w + 16 <= ROW_FLOATS:
                applies.append(PATH_TWO_PHASE)
        if path is None:
            self.path = applies[len(applies) - 1]   # (no wraparound in kernels)
        elif POOL_PATHS.get(path) in applies:
            self.path = POOL_PATHS[path]
        else:
            raise ValueError(f"Pool2dStep: path {path!r} does not apply")
        self.path_name = {v: k for k, v in POOL_PATHS.items()}[self.path]

    cdef void run(self) noexcept nogil:
        if self.x.shape[0] * self.x.shape[1] == 0:
            return
        pool2d_kernel(self.x, self.out, self.g, self.path, self.num_threads)


cdef inline float row_sum(const float *x, Py_ssize_t cols) noexcept nogil:
    """sum(x[0:cols]): four 8-lane partial sums (fixed order), then the tail."""
    cdef vf8 s0 = vf8_zero(), s1 = vf8_zero(), s2 = vf8_zero(), s3 = vf8_zero()
    cdef Py_ssize_t i = 0
    cdef float acc
    while i + 32 <= cols:
        s0 = vf8_add(s0, vf8_load(x + i))
        s1 = vf8_add(s1, vf8_load(x + i + 8))
        s2 = vf8_add(s2, vf8_load(x + i + 16))
        s3 = vf8_add(s3, vf8_load(x + i + 24))
        i = i + 32
    while i + 8 <= cols:
        s0 = vf8_add(s0, vf8_load(x + i))
        i = i + 8
    acc = vf8_hsum(vf8_add(vf8_add(s0, s1), vf8_add(s2, s3)))
    while i < cols:
        acc = acc + x[i]
        i = i + 1
    return acc


cdef inline float row_extreme(const float *x, Py_ssize_t cols, int kind) noexcept nogil:
    """max (or min) of x[0:cols], NaN if any value is NaN."""
    cdef float tmp[8]
    cdef float acc = -INFINITY if kind == POOL_MAX else INFINITY
    cdef vf8 m = vf8_set1(acc)
    cdef Py_ssize_t i = 0
    while i + 8 <= cols:
        m = combine8(m, vf8_load(x + i), kind)
        i = i + 8
    vf8_store(tmp, m)
    for i in range(8):
        acc = combine1(acc, tmp[i], kind)
    i = cols - cols % 8
    while i < cols:
        acc = combine1(acc, x[i], kind)
        i = i + 1
    return acc


cdef inline float global_row(const float *x, Py_ssize_t cols, int kind, float p) noexcept nogil:
    """One row's reduction (vectorised for max/min/average)."""
    cdef Py_ssize_t i
    cdef float acc
    if kind == POOL_MAX or kind == POOL_MIN:
        return row_extreme(x, cols, kind)
    if kind == POOL_AVG:
        return row_sum(x, cols) / cols
    acc = 0.0
    for i in range(cols):
        acc = acc + lp_pow(x[i], p)
    return lp_root(acc, p)


cdef void global_pool_kernel(const float[:, ::1] x, float[::1] out, int kind, float p,
                             int num_threads) noexcept nogil:
    """x: (n*c, spatial) -> out: (n*c,), reduce each row."""
    cdef Py_ssize_t rows = x.shape[0], cols = x.shape[1], r
    cdef int nt = num_threads if rows * cols >= (262144 if kind != POOL_LP else PARALLEL_MIN) else 1
    if nt <= 1:
        for r in range(rows):
            out[r] = global_row(&x[r, 0], cols, kind, p)
        return
    for r in prange(rows, num_threads=nt, schedule="static"):
        out[r] = global_row(&x[r, 0], cols, kind, p)


cdef class GlobalPoolStep(Step):
    """Global pooling: x (n*c, spatial) -> out (n*c,)."""
    cdef const float[:, ::1] x
    cdef float[::1] out
    cdef int kind
    cdef float p

    def __init__(self, const float[:, ::1] x, float[::1] out, int kind, float p=2.0):
        if out.shape[0] != x.shape[0]:
            raise ValueError("GlobalPoolStep: sizes")
        self.x, self.out, self.kind, self.p = x, out, kind, p

    cdef void run(self) noexcept nogil:
        global_pool_kernel(self.x, self.out, self.kind, self.p, self.num_threads)
