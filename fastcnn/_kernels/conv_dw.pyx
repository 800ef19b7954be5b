"""Depthwise convolution (group == c_in == c_out: one filter per channel), NCHW, any kernel,
stride, padding and dilation:

    out[b, c, oh, ow] = act(bias[c] + residual[b, c, oh, ow]
                            + sum_{kh, kw} x[b, c, ih, iw] * w[c, 0, kh, kw])
    ih = oh*stride_h - pad_top + kh*dil_h, iw = ow*stride_w - pad_left + kw*dil_w (0 outside x)

Per channel, the plane is first copied into per-thread scratch P, zero-padded on every side and
split by column phase: padded row r holds stride_w phase rows of wq floats, and padded column c
lives in phase c % stride_w at index c // stride_w. Then the taps of 8 consecutive outputs of
one row are 8 consecutive floats of P for any stride and dilation, and every output is computed
the same way: no edge cases. Narrow stride-2 planes (w_in < EVEN_MAX_W) skip the phase split:
P is the plain padded plane and the taps are read with even-lane loads (the split would cost
more than the loads it saves). P is double-buffered: the next plane is copied before the current
one is computed, so the loads never wait on the stores that just wrote them.

The outputs of a plane are a fixed list of 8-wide chunks (output row, first column): rows of at
least 8 outputs are cut into chunks of 8 with the last one shifted left to end at the row's end
(it recomputes a few outputs, identically); narrower rows (7x7 planes) are one chunk each whose
extra lanes spill into the start of the next row, which is written afterwards (rows whose 8
lanes would leave the plane store only their own). The list is padded to a multiple of 8 with copies of its last
chunk, and chunks go 8 at a time through the taps: 8 independent FMA chains per tap, every
accumulator in a register. Each output sums bias then taps in the order (kh, kw).

Tasks are runs of consecutive (image, channel) planes; threads pick them dynamically, and no
value depends on the thread count (bit-identical results for any number of threads).
"""
from cython.parallel cimport prange, threadid

from fastcnn._kernels.step cimport Step
from fastcnn._kernels.simd cimport *
from fastcnn._kernels.simd_extra cimport vf8_split_even_odd, vf8_load_even
from fastcnn._kernels.ukernel cimport team, whole_lines, act_is_vector, act_vec, act_scalar
from fastcnn._kernels.act cimport act_span
from fastcnn._kernels.convgeom cimport ConvGeom, make_geom, check_geom, shape4

import numpy as np

cdef enum:
    GROUP = 8         # chunks computed together (independent accumulators)
    EVEN_MAX_W = 32   # stride-2 planes narrower than this use even-lane loads, no phase split


cdef class ConvDepthwiseStep(Step):
    """Depthwise conv (module docstring). x (n, c, h_in, w_in); w (c, 1, k_h, k_w); bias (c,) or
    None; residual like out or None; out (n, c, h_out, w_out); work: at least
    slots * `depthwise_scratch(...)` floats."""
    cdef const float[:, :, :, ::1] x
    cdef const float[:, :, :, ::1] w
    cdef const float[::1] bias
    cdef const float[:, :, :, ::1] residual
    cdef float[:, :, :, ::1] out
    cdef float[::1] work
    cdef ConvGeom g
    cdef Py_ssize_t wq, hp, phases, p_size, slot_size, slots, taps, chunks
    cdef bint even                    # P unsplit, taps read with even-lane loads (stride 2)
    cdef const float *x_end           # end of x's data (a row copy may read past its row)
    cdef Py_ssize_t[::1] tap_off      # (k_h*k_w,) offset of tap (kh, kw) in P
    cdef Py_ssize_t[::1] chunk_in     # (chunks,) offset of a chunk's first tap-(0,0) read in P
    cdef Py_ssize_t[::1] chunk_out    # (chunks,) offset of a chunk's first output in the plane
    cdef Py_ssize_t[::1] chunk_lanes  # (chunks,) lanes to store: 8, fewer at a narrow plane's
                                      # end, 0 for the copies padding the list

    def __init__(self, const float[:, :, :, ::1] x, const float[:, :, :, ::1] w, bias, residual,
                 float[:, :, :, ::1] out, strides, pads, dilations, int act=0, float alpha=0.0,
                 float beta=0.0, float[::1] work=None, Py_ssize_t slots=1):
        cdef Py_ssize_t c = x.shape[1]
        self.x, self.w, self.out = x, w, out
        self.g = make_geom(shape4(x), shape4(w), shape4(out), strides, pads, dilations, c,
                           act, alpha, beta, bias is not None, residual is not None)
        check_geom(self.g, w.shape[1])
        if w.shape[0] != c or w.shape[1] != 1 or out.shape[1] != c or out.shape[0] != x.shape[0]:
            raise ValueError("ConvDepthwiseStep: needs one filter per channel")
        self.bias = bias if bias is not None else np.zeros(1, np.float32)
        self.residual = residual if residual is not None else np.zeros((1, 1, 1, 1), np.float32)
        if self.g.has_bias and self.bias.shape[0] != c:
            raise ValueError("ConvDepthwiseStep: bias size")
        if self.g.has_residual and shape4(self.residual) != shape4(out):
            raise ValueError("ConvDepthwiseStep: residual shape")
        g = self.g
        self.wq, self.hp, self.phases = depthwise_layout(
            g.h_in, g.w_in, g.h_out, g.w_out, g.k_h, g.k_w, g.stride_h, g.stride_w, g.pad_top,
            g.pad_left, g.dil_h, g.dil_w)
        self.even = self.phases == 1 and g.stride_w == 2
        self.p_size = self.hp * self.phases * self.wq
        sw, wq, ph = g.stride_w, self.wq, self.phases
        self.taps = g.k_h * g.k_w
        if self.even:   # plain padded plane: tap (kh, kw) at row kh*dil_h, column kw*dil_w
            offs = [kh * g.dil_h * wq + kw * g.dil_w for kh in range(g.k_h) for kw in range(g.k_w)]
        else:
            offs = [(kh * g.dil_h * sw + (kw * g.dil_w) % sw) * wq + (kw * g.dil_w) // sw
                    for kh in range(g.k_h) for kw in range(g.k_w)]
        self.tap_off = np.array(offs, np.intp)
        starts = (list(range(0, g.w_out - 7, 8)) + ([g.w_out - 8] if g.w_out % 8 else [])
                  if g.w_out >= 8 else [0])
        cin, cout, lanes = [], [], []
        for oh in range(g.h_out):
            for ow in starts:
                cin.append(oh * g.stride_h * ph * wq + ow * (sw if self.even else 1))
                cout.append(oh * g.w_out + ow)
                # a narrow row's 8 lanes may run into the rows below, never past the plane
                lanes.append(8 if (oh * g.w_out + ow + 8 <= g.h_out * g.w_out) else g.w_out)
        while len(cin) % GROUP:
            cin.append(cin[len(cin) - 1])
            cout.append(cout[len(cout) - 1])
            lanes.append(0)
        self.chunks = len(cin)
        self.chunk_in = np.array(cin, np.intp)
        self.chunk_out = np.array(cout, np.intp)
        self.chunk_lanes = np.array(lanes, np.intp)
        self.slot_size = depthwise_scratch(g.h_in, g.w_in, g.h_out, g.w_out, g.k_h, g.k_w,
                                           g.stride_h, g.stride_w, g.pad_top, g.pad_left,
                                           g.dil_h, g.dil_w)
        self.x_end = &x[0, 0, 0, 0] + g.n * g.c_in * g.h_in * g.w_in if g.n > 0 else NULL
        if slots < 1:
            raise ValueError("ConvDepthwiseStep: slots must be >= 1")
        self.slots = slots
        self.work = work if work is not None else np.zeros(self.slot_size * slots, np.float32)
        if self.work.shape[0] < self.slot_size * slots:
            raise ValueError("ConvDepthwiseStep: work too small")

    cdef void copy_plane(self, const float *xc, float *p) noexcept nogil:
        """P interior = the plane xc (h_in, w_in), split by column phase unless `even`
        (borders stay zero)."""
        cdef ConvGeom *g = &self.g
        cdef Py_ssize_t sw = 1 if self.even else g.stride_w, wq = self.wq, pl = g.pad_left
        cdef Py_ssize_t ih, iw, ph, at, w8 = (g.w_in + 7) // 8 * 8
        cdef Py_ssize_t e_ph = pl % 2
        cdef const float *src
        cdef float *row
        cdef vf8 even, odd
        for ih in range(g.h_in):
            src = xc + ih * g.w_in
            row = p + (ih + g.pad_top) * sw * wq
            iw = 0
            if sw == 1:
                while iw + 8 <= g.w_in:
                    vf8_store(row + pl + iw, vf8_load(src + iw))
                    iw = iw + 8
                if iw < g.w_in and pl + w8 <= wq and src + w8 <= self.x_end:
                    # the last part as a whole vector (it reads on into the next row), then
                    # the padding columns it overwrote back to zero
                    vf8_store(row + pl + iw, vf8_load(src + iw))
                    for iw in range(g.w_in, w8):
                        row[pl + iw] = 0.0
                    continue
                while iw < g.w_in:
                    row[pl + iw] = src[iw]
                    iw = iw + 1
                continue
            if sw == 2:
                # input columns iw (even) and iw + 1 land in phases e_ph and 1 - e_ph
                while iw + 16 <= g.w_in:
                    vf8_split_even_odd(src + iw, &even, &odd)
                    vf8_store(row + e_ph * wq + (iw + pl) // 2, even)
                    vf8_store(row + (1 - e_ph) * wq + (iw + 1 + pl) // 2, odd)
                    iw = iw + 16
            # the rest one float at a time: padded column iw + pl is (phase ph, index at)
            ph = (iw + pl) % sw
            at = (iw + pl) // sw
            while iw < g.w_in:
                row[ph * wq + at] = src[iw]
                iw = iw + 1
                ph = ph + 1
                if ph == sw:
                    ph = 0
                    at = at + 1

    cdef void plane(self, const float *p, const float *wk, float b, const float *res,
                    float *o) noexcept nogil:
        """One output plane o (h_out, w_out) from its padded input P and filter wk (k_h*k_w,)."""
        cdef ConvGeom *g = &self.g
        cdef vf8 acc[GROUP]
        cdef vf8 wv, v
        cdef const float *base[GROUP]
        cdef float tmp[8]
        cdef Py_ssize_t c0, i, t, off, at, lanes, lane
        cdef bint vec_act = act_is_vector(g.act, g.alpha, g.beta)
        c0 = 0
        while c0 < self.chunks:
            for i in range(GROUP):
                acc[i] = vf8_set1(b)
                base[i] = p + self.chunk_in[c0 + i]
            if self.even:
                for t in range(self.taps):
                    wv = vf8_set1(wk[t])
                    off = self.tap_off[t]
                    for i in range(GROUP):
                        acc[i] = vf8_fmadd(vf8_load_even(base[i] + off), wv, acc[i])
            else:
                for t in range(self.taps):
                    wv = vf8_set1(wk[t])
                    off = self.tap_off[t]
                    for i in range(GROUP):
                        acc[i] = vf8_fmadd(vf8_load(base[i] + off), wv, acc[i])
            for i in range(GROUP):
                at = self.chunk_out[c0 + i]
                lanes = self.chunk_lanes[c0 + i]
                v = acc[i]
                if lanes == 8:
                    if res != NULL:
                        v = vf8_add(v, vf8_load(res + at))
                elif lanes > 0:
                    # the end of a narrow plane: assemble the residual lanes, store the lanes
                    vf8_store(tmp, v)
                    if res != NULL:
                        for lane in range(lanes):
                            tmp[lane] = tmp[lane] + res[at + lane]
                    v = vf8_load(tmp)
                else:
                    continue    # a copy padding the chunk list
                if vec_act:
                    v = act_vec(v, g.act, g.alpha, g.beta)
                if lanes == 8 and vec_act:
                    vf8_store(o + at, v)
                    continue
                vf8_store(tmp, v)
                if not vec_act:
                    act_span(tmp, tmp, lanes, g.act, g.alpha, g.beta)
                for lane in range(lanes):
                    o[at + lane] = tmp[lane]
            c0 = c0 + GROUP

    cdef void task(self, Py_ssize_t first, Py_ssize_t last, float *p) noexcept nogil:
        """Planes [first, last) of the (image, channel) list; p: this thread's scratch (two
        P buffers: the next plane is copied into one while the other is computed)."""
        cdef ConvGeom *g = &self.g
        cdef Py_ssize_t plane, img, ch
        cdef float *cur = p
        cdef float *nxt = p + self.p_size
        cdef float *swap
        vf8_zero_fill(p, 2 * self.p_size)
        if first >= last:
            return
        self.copy_plane(&self.x[first // g.c_in, first % g.c_in, 0, 0], cur)
        for plane in range(first, last):
            if plane + 1 < last:
                self.copy_plane(&self.x[(plane + 1) // g.c_in, (plane + 1) % g.c_in, 0, 0], nxt)
            img = plane // g.c_in
            ch = plane - img * g.c_in
            self.plane(cur, &self.w[ch, 0, 0, 0], self.bias[ch] if g.has_bias else 0.0,
                       &self.residual[img, ch, 0, 0] if g.has_residual else NULL,
                       &self.out[img, ch, 0, 0])
            swap = cur
            cur = nxt
            nxt = swap

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t planes = self.g.n * self.g.c_in, tasks, per, t
        cdef Py_ssize_t macs = planes * self.g.h_out * self.g.w_out * self.taps
        cdef Py_ssize_t nt = team(self.num_threads, self.slots, macs, planes)
        cdef float *work = &self.work[0]
        cdef Py_ssize_t stride = self.slot_size
        if planes == 0:
            return
        if nt <= 1:
            self.task(0, planes, work)
            return
        # several tasks per thread (a thread slowed by another process is not waited for),
        # each zeroing its scratch once
        tasks = min(planes, 8 * nt)
        per = (planes + tasks - 1) // tasks
        tasks = (planes + per - 1) // per
        for t in prange(tasks, num_threads=nt, schedule="dynamic"):
            self.task(t * per, min(planes, (t + 1) * per), work + threadid() * stride)


def depthwise_layout(Py_ssize_t h_in, Py_ssize_t w_in, Py_ssize_t h_out, Py_ssize_t w_out,
                     Py_ssize_t k_h, Py_ssize_t k_w, Py_ssize_t stride_h, Py_ssize_t stride_w,
                     Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t dil_h,
                     Py_ssize_t dil_w):
    """(wq, hp, phases) of P: floats per phase row (a multiple of 8), padded rows, phase rows
    per padded row (stride_w, or 1 for a narrow stride-2 plane read with even-lane loads).

    Split: a chunk reads 8 floats from index ow0 + (kw*dil_w) // stride_w with
    ow0 <= max(w_out - 8, 0); input column iw lives at (iw + pad_left) // stride_w.
    Unsplit: a chunk reads 16 floats from column 2*ow0 + kw*dil_w. Both: the last part of an
    input row may be copied as a whole vector, ending at pad_left + w_in rounded up to 8."""
    cdef Py_ssize_t hp = max(pad_top + h_in, (h_out - 1) * stride_h + (k_h - 1) * dil_h + 1)
    cdef Py_ssize_t need, cols
    cdef bint even = stride_w == 2 and w_in < EVEN_MAX_W
    if even:
        need = 2 * max(w_out - 8, 0) + (k_w - 1) * dil_w + 16
        cols = pad_left + (w_in + 7) // 8 * 8
    else:
        need = max(w_out, 8) + ((k_w - 1) * dil_w) // stride_w
        cols = (pad_left + w_in + stride_w - 1) // stride_w
        if stride_w == 1:
            cols = pad_left + (w_in + 7) // 8 * 8
    return (max(need, cols) + 7) // 8 * 8, hp, 1 if even else stride_w


def depthwise_scratch(Py_ssize_t h_in, Py_ssize_t w_in, Py_ssize_t h_out, Py_ssize_t w_out,
                      Py_ssize_t k_h, Py_ssize_t k_w, Py_ssize_t stride_h, Py_ssize_t stride_w,
                      Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t dil_h,
                      Py_ssize_t dil_w):
    """Floats of scratch one thread needs: two padded planes P."""
    wq, hp, phases = depthwise_layout(h_in, w_in, h_out, w_out, k_h, k_w, stride_h, stride_w,
                                      pad_top, pad_left, dil_h, dil_w)
    return whole_lines(2 * hp * phases * wq)


def conv2d_depthwise(x, w, bias, out, strides=(1, 1), pads=(0, 0), dilations=(1, 1), act=0,
                     alpha=0.0, beta=0.0, residual=None, num_threads=1):
    """Depthwise NCHW convolution into `out` (tests and bench); arguments as conv2d_direct
    (group = channels)."""
    slots = max(1, num_threads)
    s = ConvDepthwiseStep(x, w, bias, residual, out, strides, pads, dilations, act, alpha, beta,
                          None, slots)
    s.num_threads = num_threads
    s()
