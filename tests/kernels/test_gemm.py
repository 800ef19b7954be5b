"""Packed SGEMM (fastcnn/_kernels/gemm.pyx, ukernel.pxd) against the plain row kernel and the
numpy reference, and Gemm/MatMul through the planner (fastcnn/runtime/k_dense.py)."""
import numpy as np
import pytest

from act_reference import ACT_CASES, ACTIVATIONS, apply
from helpers import assert_close, ir_model, onnx_model, rand, run_fastcnn_onnx, run_ort
from reference import gemm as ref_gemm

from fastcnn._kernels import gemm as G
from fastcnn._kernels.eltwise import ACT_CODES

# (m, k, n): edge tiles in every direction (tile = 6 x 16), K = 1, N = 1, GEMV rows
SHAPES = [
    (1, 1, 1), (1, 400, 120), (2, 7, 3), (7, 13, 17), (6, 16, 16), (12, 32, 32), (13, 1, 5),
    (100, 33, 1), (5, 300, 40), (31, 70, 47), (64, 576, 100), (1, 1000, 33),
]


def _row_kernel(a, b):
    c = np.empty((a.shape[0], b.shape[1]), np.float32)
    G.sgemm(a, b, c)
    return c


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("prepack", [True, False], ids=["packed_b", "plain_b"])
def test_sgemm_matches_references(m, k, n, prepack, threads):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, b = rand(rng, m, k), rand(rng, k, n)
    c = np.full((m, n), np.nan, np.float32)
    G.sgemm_packed(a, b, c, prepack=prepack, num_threads=threads)
    assert_close(c, ref_gemm(a, b), "vs numpy reference")
    assert_close(c, _row_kernel(a, b), "vs row kernel")


@pytest.mark.parametrize("kc", [1, 5, 64])
def test_k_blocks_accumulate(kc, threads):
    """Small K blocks: the first block stores, the later ones add, the last runs the epilogue."""
    rng = np.random.default_rng(kc)
    m, k, n = 14, 131, 37
    a, b, bias = rand(rng, m, k), rand(rng, k, n), rand(rng, n)
    addend = rand(rng, m, n)
    for prepack in (True, False):
        c = np.full((m, n), np.nan, np.float32)
        if prepack:
            G.sgemm_packed(a, b, c, bias, addend, ACT_CODES["Relu"], kc=kc, num_threads=threads)
            assert_close(c, np.maximum(ref_gemm(a, b) + bias + addend, 0))
        else:
            G.sgemm_packed(a, b, c, prepack=False, kc=kc, num_threads=threads)
            assert_close(c, ref_gemm(a, b))


def test_every_activation_has_a_reference():
    assert set(ACT_CODES) <= set(ACTIVATIONS), set(ACT_CODES) - set(ACTIVATIONS)


@pytest.mark.parametrize("name,alpha,beta", ACT_CASES)
@pytest.mark.parametrize("m", [1, 9], ids=["gemv", "tiles"])
def test_fused_epilogue(name, alpha, beta, m, threads):
    """act(A @ B + bias + addend) fused == the reference activation of the unfused result (same
    pre-activation values, so discontinuous activations compare exactly)."""
    rng = np.random.default_rng(7)
    k, n = 40, 35  # 35 columns: two full panels and a partial one
    a, b = rand(rng, m, k, lo=-0.6, hi=0.6), rand(rng, k, n, lo=-0.6, hi=0.6)
    bias, addend = rand(rng, n), rand(rng, m, n)
    plain = np.empty((m, n), np.float32)
    G.sgemm_packed(a, b, plain, bias, addend, num_threads=threads)
    assert_close(plain, ref_gemm(a, b) + bias + addend)
    fused = np.empty((m, n), np.float32)
    G.sgemm_packed(a, b, fused, bias, addend, ACT_CODES[name], alpha, beta, num_threads=threads)
    assert_close(fused, apply(name, plain, alpha, beta), name)


def test_bit_identical_across_threads():
    rng = np.random.default_rng(3)
    # over 2M multiply-adds each (two threads run); columns split, rows split, GEMV
    for m, k, n in [(64, 576, 400), (600, 200, 20), (1, 4096, 1000)]:
        a, b, bias = rand(rng, m, k), rand(rng, k, n), rand(rng, n)
        outs = []
        for nt in (1, 2):
            c = np.empty((m, n), np.float32)
            G.sgemm_packed(a, b, c, bias, None, ACT_CODES["Relu"], num_threads=nt)
            outs.append(c)
            c2 = np.empty((m, n), np.float32)
            G.sgemm_packed(a, b, c2, prepack=False, num_threads=nt)
            outs.append(c2)
        assert np.array_equal(outs[0], outs[2]) and np.array_equal(outs[1], outs[3])


def test_step_validation():
    x = np.zeros((3, 5), np.float32)
    out = np.zeros((3, 7), np.float32)
    with pytest.raises(ValueError):
        G.PackedDenseStep(x, np.zeros((1, 4, 16), np.float32), None, None, out)  # k mismatch
    with pytest.raises(ValueError):
        G.PackedDenseStep(x, np.zeros((1, 5, 16), np.float32), np.zeros(6, np.float32), None, out)
    with pytest.raises(ValueError):
        G.PackedDenseStep(x, np.zeros((2, 5, 16), np.float32), None, None, out)  # panels
    with pytest.raises(ValueError):
        G.BatchedMatMulStep(np.zeros(15, np.float32), np.zeros(35, np.float32),
                            np.zeros(20, np.float32), np.array([1], np.int64),
                            np.array([0], np.int64), np.array([0], np.int64), 3, 5, 7)
    with pytest.raises(ValueError):
        G.BatchedMatMulStep(np.zeros(15, np.float32), np.zeros(35, np.float32),
                            np.zeros(21, np.float32), np.array([0], np.int64),
                            np.array([0], np.int64), np.array([0], np.int64), 3, 5, 7,
                            16, np.zeros(10, np.float32), 1)  # work too small


def test_pack_b_panels_layout():
    b = np.arange(3 * 20, dtype=np.float32).reshape(3, 20)
    p = G.pack_b_panels(b)
    assert p.shape == (2, 3, 16)
    assert np.array_equal(p[0], b[:, :16])
    assert np.array_equal(p[1, :, :4], b[:, 16:]) and not p[1, :, 4:].any()


# ----------------------------------------------------------------------------- through the planner
@pytest.mark.parametrize("m,k,n", [(1, 400, 120), (3, 13, 7), (17, 64, 33)])
@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_node(m, k, n, trans_a, trans_b, threads):
    rng = np.random.default_rng(m + k + n)
    a = rand(rng, *((k, m) if trans_a else (m, k)))
    b = rand(rng, *((n, k) if trans_b else (k, n)))
    for c, act in [(rand(rng, n), "Relu"), (rand(rng, m, n), ""), (rand(rng, 1, n), "LeakyRelu")]:
        attrs = dict(alpha=0.7, beta=1.3, transA=trans_a, transB=trans_b, activation=act,
                     activation_alpha=0.2)
        model = ir_model([("Gemm", ["a", "b", "c"], ["y"], attrs)], {"a": a.shape}, ["y"],
                         {"b": b, "c": c}, num_threads=threads)
        got = model.run(None, {"a": a})[0]
        ref = apply(act, ref_gemm(a, b, c, 0.7, 1.3, trans_a, trans_b), 0.2)
        assert_close(got, ref, f"Gemm act={act}")


@pytest.mark.parametrize("a_shape,b_shape", [((2, 3, 5, 13), (13, 7)), ((5, 13), (13, 1)),
                                             ((13,), (13, 40)), ((4, 1, 13), (13, 3))])
def test_matmul_constant_b(a_shape, b_shape, threads):
    rng = np.random.default_rng(11)
    a, b = rand(rng, *a_shape), rand(rng, *b_shape)
    model = ir_model([("MatMul", ["a", "b"], ["y"])], {"a": a.shape}, ["y"], {"b": b},
                     num_threads=threads)
    assert_close(model.run(None, {"a": a})[0], np.matmul(a.astype(np.float64), b))


@pytest.mark.parametrize("a_shape,b_shape", [((2, 3, 5, 13), (3, 13, 20)), ((4, 9, 17), (4, 17, 2)),
                                             ((7, 40), (40, 50)), ((1, 6, 16), (3, 16, 16))])
def test_matmul_runtime_operands(a_shape, b_shape, threads):
    rng = np.random.default_rng(12)
    a, b = rand(rng, *a_shape), rand(rng, *b_shape)
    model = ir_model([("MatMul", ["a", "b"], ["y"])], {"a": a.shape, "b": b.shape}, ["y"],
                     num_threads=threads)
    assert_close(model.run(None, {"a": a, "b": b})[0], np.matmul(a.astype(np.float64), b))


def test_gemm_vs_onnxruntime():
    onnx = pytest.importorskip("onnx")
    from onnx import helper
    rng = np.random.default_rng(5)
    a, b, c = rand(rng, 3, 400), rand(rng, 120, 400), rand(rng, 120)
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=0.5, transB=1)
    model = onnx_model([node], {"a": a.shape}, ["y"], {"b": b, "c": c})
    assert_close(run_fastcnn_onnx(model, {"a": a})[0], run_ort(model, {"a": a})[0])


@pytest.mark.parametrize("n,k", [(1, 1), (16, 3), (17, 5), (24, 40), (1000, 33), (96, 576)])
def test_pack_bt_panels(n, k):
    """Panels from B^T (n, k), as conv and dense weights are stored: panel j holds columns
    16j..16j+15 of B row by row, zero past column n (independent numpy layout)."""
    wide = rand(np.random.default_rng(n + k), n, 2 * k)
    bt = wide[:, ::2]                       # a strided view: pack_bt_panels copies it first
    assert bt.strides[1] == 8
    panels = G.pack_bt_panels(bt)
    np_ = -(-n // 16)
    assert panels.shape == (np_, k, 16) and panels.flags.c_contiguous
    expected = np.zeros((np_ * 16, k), np.float32)
    expected[:n] = bt
    for j in range(np_):
        assert np.array_equal(panels[j], expected[16 * j:16 * j + 16].T)
    assert np.array_equal(panels, G.pack_b_panels(bt.T))
