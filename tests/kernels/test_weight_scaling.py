"""copy.scale_rows (a conv's weights scaled per output channel while planning),
ir/weights.conv_weights, which uses it, and ir/weights.scaled, its numpy fallback: the bits of
float64 products rounded once to float32, computed in the test with numpy alone,
for weights at any byte offset (viewing an .onnx file), including Inf, NaN, subnormals and
products beyond float32's range."""
import numpy as np
import pytest

from fastcnn._kernels.copy import scale_rows
from fastcnn.ir.weights import conv_weights, scaled


def _at_offset(a, offset):
    """A read-only array equal to `a` whose data starts `offset` bytes into a buffer."""
    buf = bytearray(offset) + a.tobytes()
    return np.frombuffer(memoryview(bytes(buf)), a.dtype, a.size, offset).reshape(a.shape)


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(7, 3, 3, 3), (1, 1, 1, 1), (33, 5, 1, 1), (6, 1, 5, 5)])
def test_scaled_weights_are_numpys_float64_products(offset, shape):
    rng = np.random.default_rng(sum(shape) + offset)
    w = rng.standard_normal(shape).astype(np.float32)
    flat = w.reshape(-1)
    flat[1:6] = [np.inf, -np.inf, np.nan, 1e-45, 3e38][:flat.size - 1]   # w[0] stays finite
    s = rng.uniform(-4.0, 4.0, shape[0])
    s[0] = 1e-300 if shape[0] > 1 else s[0]
    src = _at_offset(w, offset)
    assert src.ctypes.data % 4 == offset % 4
    with np.errstate(all="ignore"):   # numpy alone: float64 products, one rounding to float32
        want = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        assert np.array_equal(scaled(w, s.reshape((-1,) + (1,) * (w.ndim - 1))), want, equal_nan=True)
    got = conv_weights(src, list(s))
    assert got.dtype == np.float32 and got.shape == shape and got.flags.c_contiguous
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(scale_rows(src.reshape(shape[0], -1), s).reshape(shape), want, equal_nan=True)


def test_scale_rows_refuses_what_it_cannot_read():
    w = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match="one scale per row"):
        scale_rows(w, np.ones(3))
    for bad in (w.astype(np.float64), w[:, ::2], w.reshape(-1)):
        with pytest.raises(ValueError, match="C-contiguous 2-D float32"):
            scale_rows(bad, np.ones(4))
    assert scale_rows(np.ones((0, 6), np.float32), np.ones(0)).shape == (0, 6)
    assert conv_weights(w, []) is w


@pytest.mark.parametrize("offset", [0, 1, 2, 3])
@pytest.mark.parametrize("k,n", [(1, 1), (3, 16), (5, 17), (64, 40), (300, 1000)])
def test_pack_b_panels_reads_b_in_place(offset, k, n):
    """gemm.pack_b_panels of B (k, n) (a MatMul's or a Gemm's without transB, Keras Dense
    weights) read in place at any byte offset, on one and two threads: numpy's panels, B's
    columns 16 at a time, zero past n (into memory that was not zero). (300, 1000) has enough
    panels for two threads."""
    from fastcnn._kernels.gemm import pack_b_panels
    rng = np.random.default_rng(k * 1000 + n + offset)
    b = rng.standard_normal((k, n)).astype(np.float32)
    b.reshape(-1)[:3] = [np.nan, np.inf, 1e-45][:b.size]
    src = _at_offset(b, offset)
    assert src.ctypes.data % 4 == offset % 4
    want = _numpy_panels(np.ascontiguousarray(b.T))
    dirty = lambda shape: np.full(shape, 7.0, np.float32)   # noqa: E731 (the zeros are written)
    for threads in (1, 2):
        got = pack_b_panels(src, alloc=dirty, num_threads=threads)
        assert got.shape == (-(-n // 16), k, 16) and got.flags.c_contiguous
        assert np.array_equal(got, want, equal_nan=True)
    for other in (np.asfortranarray(b), b.astype(np.float64), b.tolist()):   # converted first
        assert np.array_equal(pack_b_panels(other), want, equal_nan=True)
    with pytest.raises(ValueError, match="2-D"):
        pack_b_panels(b.reshape(-1))


def _numpy_panels(m):
    """(n, k) -> (ceil(n/16), k, 16): column t of panel j is row 16j+t of m, zero past n."""
    n, k = m.shape
    padded = np.zeros((-(-n // 16) * 16, k), np.float32)
    padded[:n] = m
    return padded.reshape(-1, 16, k).transpose(0, 2, 1)


@pytest.mark.parametrize("offset", [0, 1, 2, 3])
@pytest.mark.parametrize("n,k", [(1, 1), (16, 64), (17, 65), (33, 130), (96, 24), (5, 200)])
def test_pack_bt_panels_scales_as_it_packs(offset, n, k):
    """gemm.pack_bt_panels with a scale packs the float64 products rounded once (numpy in the
    test), reading weights at any byte offset in place; without one it packs them as stored.
    k spans several of its 64-column blocks; n leaves a partial last panel."""
    from fastcnn._kernels.gemm import pack_bt_panels
    rng = np.random.default_rng(n * 1000 + k + offset)
    w = rng.standard_normal((n, k)).astype(np.float32)
    flat = w.reshape(-1)
    flat[1:6] = [np.inf, -np.inf, np.nan, 1e-45, 3e38][:flat.size - 1]
    s = rng.uniform(-4.0, 4.0, n)
    s[-1] = 1e-300 if n > 1 else s[-1]
    src = _at_offset(w, offset)
    assert src.ctypes.data % 4 == offset % 4
    with np.errstate(all="ignore"):
        want = (w.astype(np.float64) * s[:, None]).astype(np.float32)
    got = pack_bt_panels(src, s)
    assert got.shape == (-(-n // 16), k, 16) and got.flags.c_contiguous
    assert np.array_equal(got, _numpy_panels(want), equal_nan=True)
    assert np.array_equal(pack_bt_panels(src), _numpy_panels(w), equal_nan=True)
    # the conv path: the panels of conv_weights' scaled array are the same bits, and the conv
    # packer the planner calls (conv_tile.pack_tile_weights) passes the scale through
    assert np.array_equal(got, pack_bt_panels(conv_weights(src.reshape(n, k, 1, 1), list(s)).reshape(n, k)),
                          equal_nan=True)
    from fastcnn._kernels.conv_tile import pack_tile_weights
    assert np.array_equal(pack_tile_weights(src.reshape(n, k, 1, 1), s), got, equal_nan=True)
    # channels-last K order (kh, kw, ci): the panels of the transposed weights, the same scale
    if k % 6 == 0:
        w4 = src.reshape(n, k // 6, 2, 3)
        with np.errstate(all="ignore"):
            want_cl = _numpy_panels((w4.transpose(0, 2, 3, 1).reshape(n, k).astype(np.float64)
                                     * s.reshape(n, 1)).astype(np.float32))
        assert np.array_equal(pack_tile_weights(w4, s, True), want_cl, equal_nan=True)
        # and unscaled (the packer's permuted loop without a scale)
        assert np.array_equal(pack_tile_weights(w4, None, True),
                              _numpy_panels(w4.transpose(0, 2, 3, 1).reshape(n, k)), equal_nan=True)


@pytest.mark.parametrize("n,k", [(1000, 300), (33, 4100), (17, 8200)])
def test_pack_bt_panels_on_two_threads(n, k):
    """Panels shared out over two threads (enough of them: 256 KB a thread at least), scaled,
    with the columns permuted, from an odd byte offset: numpy's panels, the same bits as on one
    thread; pack_tile_weights passes the thread count through."""
    from fastcnn._kernels.conv_tile import pack_tile_weights
    from fastcnn._kernels.gemm import pack_bt_panels
    rng = np.random.default_rng(n + k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    s = rng.uniform(-4.0, 4.0, n)
    cols = rng.permutation(k)
    src = _at_offset(w, 1)
    want = _numpy_panels((w[:, cols].astype(np.float64) * s[:, None]).astype(np.float32))
    got = pack_bt_panels(src, s, cols, num_threads=2)
    assert np.array_equal(got, want)
    assert np.array_equal(pack_bt_panels(src, s, cols, num_threads=1), want)
    assert np.array_equal(pack_tile_weights(src.reshape(n, k, 1, 1), s, False, None, 2),
                          _numpy_panels((w.astype(np.float64) * s[:, None]).astype(np.float32)))


def test_pack_bt_panels_refuses_a_wrong_scale():
    from fastcnn._kernels.gemm import pack_bt_panels
    with pytest.raises(ValueError, match="3 scale values for 4 rows"):
        pack_bt_panels(np.ones((4, 6), np.float32), np.ones(3))
    with pytest.raises(ValueError, match="2-D"):
        pack_bt_panels(np.ones(6, np.float32))
    assert pack_bt_panels(np.ones((0, 6), np.float32), np.ones(0)).shape == (0, 6, 16)
    for cols in ([0, 1, 2, 3, 4, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 6], [-1, 1, 2, 3, 4, 5]):
        with pytest.raises(ValueError, match="permutation of range"):   # read out of bounds
            pack_bt_panels(np.ones((4, 6), np.float32), None, np.array(cols))


@pytest.mark.parametrize("alpha", [0.7, 1e-30, 3.0e30, -2.5])
def test_pack_bt_panels_with_a_float32_scale_gives_the_float32_products(alpha):
    """A Gemm's alpha is applied while packing as a float64 scale holding the float32 alpha:
    the product of two float32 values is exact in float64, so the packed bits are those of
    numpy's float32 w * alpha32 (k_dense packs B^T that way), subnormals and overflow included."""
    from fastcnn._kernels.gemm import pack_bt_panels
    rng = np.random.default_rng(3)
    w = rng.standard_normal((21, 70)).astype(np.float32)
    w.reshape(-1)[:6] = [np.inf, -np.inf, np.nan, 1e-45, 3e38, -1e-38]
    a32 = np.float32(alpha)
    with np.errstate(all="ignore"):
        want = w * a32
    got = pack_bt_panels(_at_offset(w, 2), np.full(21, a32))
    assert np.array_equal(got, _numpy_panels(want), equal_nan=True)
