# Geometry of one 2-D NCHW convolution, shared by every conv kernel (1-D convs run with h = 1).
#   x (n, c_in, h_in, w_in), w (c_out, c_in/group, k_h, k_w), out (n, c_out, h_out, w_out)
#   out[b, co, oh, ow] reads x[b, ci, oh*stride_h - pad_top + kh*dil_h, ow*stride_w - pad_left + kw*dil_w]
# The bottom/right padding is implied by h_out/w_out.
cdef struct ConvGeom:
    Py_ssize_t n, c_in, h_in, w_in, c_out, h_out, w_out
    Py_ssize_t k_h, k_w, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, group
    int act
    float alpha, beta
    bint has_bias, has_residual


cdef inline ConvGeom make_geom(tuple x_shape, tuple w_shape, tuple out_shape, strides, pads,
                               dilations, Py_ssize_t group, int act, float alpha, float beta,
                               bint has_bias, bint has_residual) except *:
    cdef ConvGeom g
    g.n, g.c_in, g.h_in, g.w_in = x_shape
    g.c_out, _, g.k_h, g.k_w = w_shape
    _, _, g.h_out, g.w_out = out_shape
    g.stride_h, g.stride_w = strides
    g.pad_top, g.pad_left = pads[0], pads[1]
    g.dil_h, g.dil_w = dilations
    g.group = group
    g.act, g.alpha, g.beta = act, alpha, beta
    g.has_bias, g.has_residual = has_bias, has_residual
    return g


cdef inline check_geom(ConvGeom g, Py_ssize_t w_c):
    """Last line of defence for direct construction from Python (tests): the geometry must fit.
    (Kernels bounds-check every input position, so any output size is safe.)"""
    if g.group < 1 or g.c_in % g.group or g.c_out % g.group or w_c * g.group != g.c_in:
        raise ValueError("conv: channels and group do not fit")
    if (g.stride_h < 1 or g.stride_w < 1 or g.dil_h < 1 or g.dil_w < 1 or g.pad_top < 0
            or g.pad_left < 0 or g.k_h < 1 or g.k_w < 1):
        raise ValueError("conv: bad kernel/stride/dilation/pad")
    if g.h_out < 1 or g.w_out < 1 or g.n < 0:
        raise ValueError("conv: empty output")


cdef inline shape4(a):
    return (a.shape[0], a.shape[1], a.shape[2], a.shape[3])
