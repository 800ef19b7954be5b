"""Training kernels against float64 numpy: forward values, and gradients of every loss and of
dense layers (weights, bias, inputs; two layers with an activation between) against central
finite differences of the same function evaluated in float64."""
import numpy as np
import pytest

from fastcnn._kernels import train as K
from fastcnn._kernels.eltwise import ACT_CODES
from fastcnn.finetune.network import HeadNetwork
import train_reference as ref

EMPTY = np.zeros(0, np.float32)


def f32(a):
    return np.ascontiguousarray(a, np.float32)


def numeric_grad(f, x, h=1e-6):
    """Central differences of scalar f at float64 array x (every entry)."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


def assert_grad(got, want, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want).max()
    tol = 1e-5 + 2e-3 * np.abs(want).max()
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g}"


# ----------------------------------------------------------------------------- kernels vs numpy
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 13, 5), (7, 9, 17), (300, 40, 130)])
@pytest.mark.parametrize("act", ["", "Relu", "Tanh", "Sigmoid"])
def test_dense_forward_backward_match_numpy(m, k, n, act, threads):
    rng = np.random.default_rng(m * 100 + n)
    x, w, b = f32(rng.normal(size=(m, k))), f32(rng.normal(size=(k, n))), f32(rng.normal(size=n))
    wt = f32(w.T)  # the kernels hold weights out-features by in-features
    z, a = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    K.dense_forward(x, wt, b, z, a, np.empty(k * m + n * m, np.float32), ACT_CODES[act], 0.0, 0.0, threads)
    zr = x.astype(np.float64) @ w + b
    np.testing.assert_allclose(z, zr, atol=1e-4 + 1e-5 * np.abs(zr).max())
    np.testing.assert_allclose(a, ref.act(act, z.astype(np.float64)), atol=1e-5)
    da = f32(rng.normal(size=(m, n)))
    dz = np.empty_like(da)
    K.act_backward(z, da, dz, ACT_CODES[act], 0.0, 0.0, threads)
    dzr = da * ref.act_grad(act, z.astype(np.float64))
    np.testing.assert_allclose(dz, dzr, atol=1e-5)
    dwt, db, dx = np.empty((n, k), np.float32), np.empty(n, np.float32), np.empty((m, k), np.float32)
    K.dense_backward(x, wt, dz, dwt, db, dx, np.empty(n * m, np.float32), threads)
    d64 = dz.astype(np.float64)
    for got, want, what in ((dwt.T, x.T @ d64, "dW"), (db, d64.sum(0), "db"), (dx, d64 @ w.T.astype(np.float64), "dX")):
        np.testing.assert_allclose(got, want, atol=1e-4 + 1e-5 * np.abs(want).max(), err_msg=what)


def test_dense_kernels_refuse_bad_shapes():
    x, b = np.zeros((3, 4), np.float32), np.zeros(2, np.float32)
    out = np.zeros((3, 2), np.float32)
    big = np.zeros(100, np.float32)
    with pytest.raises(ValueError):
        K.dense_forward(x, np.zeros((2, 5), np.float32), b, out, out, big)  # k 4 != 5
    with pytest.raises(ValueError):
        K.dense_forward(x, np.zeros((2, 4), np.float32), b, out, out, np.zeros(17, np.float32))  # scratch
    with pytest.raises(ValueError):
        K.dense_backward(x, np.zeros((2, 4), np.float32), out, np.zeros((2, 4), np.float32),
                         np.zeros(2, np.float32), None, np.zeros(5, np.float32))  # scratch too small
    with pytest.raises(ValueError):
        K.softmax_cross_entropy(out, np.array([0, 1, 2], np.int64), EMPTY, out.copy())  # label 2 >= n
    with pytest.raises(ValueError):
        K.dense_forward(np.zeros((3, 2), np.float32), np.zeros((2, 2), np.float32), b, out, out, big, 25)


def test_position_pooling_matches_numpy(threads):
    rng = np.random.default_rng(3)
    a = f32(rng.normal(size=(3 * 5, 7)))
    out = np.empty((3, 7), np.float32)
    K.mean_positions(a, out, threads)
    np.testing.assert_allclose(out, a.reshape(3, 5, 7).mean(1), atol=1e-6)
    d = f32(rng.normal(size=(3, 7)))
    da = np.empty_like(a)
    K.spread_positions(d, da, threads)
    np.testing.assert_allclose(da, np.repeat(d, 5, axis=0) / 5, atol=1e-7)


# ----------------------------------------------------------------------------- losses
def _loss_cases(rng):
    m, n = 6, 5
    z = rng.normal(scale=2.0, size=(m, n))
    labels = np.array([0, 4, 2, 2, 1, 3])
    t01 = (rng.random((m, n)) > 0.5).astype(np.float64)
    treg = rng.normal(size=(m, n))
    cw = np.array([1.0, 2.0, 0.5, 1.5, 3.0])
    return [
        ("softmax", z, labels, None, K.softmax_cross_entropy, ref.softmax_xent),
        ("softmax weighted", z, labels, cw, K.softmax_cross_entropy, ref.softmax_xent),
        ("sigmoid", z, t01, None, K.sigmoid_cross_entropy, ref.sigmoid_xent),
        ("sigmoid weighted", z, t01, cw, K.sigmoid_cross_entropy, ref.sigmoid_xent),
        ("mse", z, treg, None, K.mean_squared_error, ref.mse),
        ("mse weighted", z, treg, cw, K.mean_squared_error, ref.mse),
    ]


@pytest.mark.parametrize("case", range(6))
def test_loss_value_and_gradient_against_finite_differences(case, threads):
    name, z, y, cw, kernel, reference = _loss_cases(np.random.default_rng(1))[case]
    grad = np.empty(z.shape, np.float32)
    yk = y.astype(np.int64) if y.ndim == 1 else f32(y)
    s, w = kernel(f32(z), yk, EMPTY if cw is None else f32(cw), grad, threads)
    value, _ = reference(f32(z).astype(np.float64), y, cw)
    assert abs(s / w - value) <= 1e-6 * max(1.0, abs(value)), name
    numeric = numeric_grad(lambda zz: reference(zz, y, cw)[0], f32(z).astype(np.float64))
    assert_grad(grad, numeric, name)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1000.0, 0.0, -1000.0], [-3e4, 3e4, 0.0]], np.float32)
    grad = np.empty_like(z)
    s, w = K.softmax_cross_entropy(z, np.array([0, 0], np.int64), EMPTY, grad)
    assert np.isfinite(s) and abs(s / w - 3e4) < 1.0  # row 1 loss 6e4/2 dominates, row 0 ~ 0
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-6)


def test_sigmoid_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[80.0, -80.0, 1e4]], np.float32)
    t = np.array([[1.0, 0.0, 0.0]], np.float32)
    grad = np.empty_like(z)
    s, w = K.sigmoid_cross_entropy(z, t, EMPTY, grad)
    assert np.isfinite(s) and abs(s - 1e4) < 1e-2
    np.testing.assert_allclose(grad, [[0.0, 0.0, 1 / 3]], atol=1e-6)


# ----------------------------------------------------------------------------- whole head
HEADS = [
    ("one layer", [(9, 4, "")], 1),
    ("two layers relu", [(9, 6, "Relu"), (6, 4, "")], 1),
    ("two layers leaky", [(9, 6, "LeakyRelu"), (6, 4, "")], 1),
    ("three layers tanh sigmoid", [(9, 7, "Tanh"), (7, 6, "Sigmoid"), (6, 4, "")], 1),
    ("two layers elu hardswish", [(9, 7, "Elu"), (7, 6, "HardSwish"), (6, 4, "")], 1),
    ("conv1x1 relu positions", [(9, 4, "Relu")], 5),
]


def _layer_params(shapes, rng):
    params = []
    for k, n, name in shapes:
        alpha = {"LeakyRelu": 0.1, "Elu": 1.0}.get(name, 0.0)
        params.append((rng.normal(scale=0.7, size=(k, n)), rng.normal(scale=0.3, size=n), name, alpha, 0.0))
    return params


@pytest.mark.parametrize("case", range(len(HEADS)))
@pytest.mark.parametrize("loss", ["softmax", "sigmoid", "mse"])
def test_head_gradients_against_finite_differences(case, loss, threads):
    """dL/dW, dL/db for every layer and dL/dx through the head, the forward by HeadNetwork and
    the loss kernel, the reference by differentiating the float64 numpy function numerically."""
    title, shapes, positions = HEADS[case]
    rng = np.random.default_rng(case)
    batch = 5
    params = _layer_params(shapes, rng)
    params = [(f32(w).astype(np.float64), f32(b).astype(np.float64), nm, a, bt) for w, b, nm, a, bt in params]
    x = f32(rng.normal(size=(batch * positions, shapes[0][0]))).astype(np.float64)
    n = shapes[-1][1]
    if loss == "softmax":
        y = rng.integers(0, n, batch)
        kernel, reference, yk = K.softmax_cross_entropy, ref.softmax_xent, y.astype(np.int64)
    elif loss == "sigmoid":
        y = (rng.random((batch, n)) > 0.5).astype(np.float64)
        kernel, reference, yk = K.sigmoid_cross_entropy, ref.sigmoid_xent, f32(y)
    else:
        y = rng.normal(size=(batch, n))
        kernel, reference, yk = K.mean_squared_error, ref.mse, f32(y)

    net = HeadNetwork([w for w, *_ in params], [b for _, b, *_ in params],
                      [(nm, a, bt) for _, _, nm, a, bt in params], [True] * len(params),
                      positions=positions, num_threads=threads)
    out = net.forward(f32(x), batch)
    grad = np.empty((batch, n), np.float32)
    kernel(out, yk, EMPTY, grad, threads)
    net.backward(grad)

    def loss_of(layers, xx):
        o, _ = ref.forward(layers, xx, positions)
        return reference(o, y)[0]

    for i, (w, b, nm, a, bt) in enumerate(params):
        def with_w(ww, i=i):
            layers = list(params)
            layers[i] = (ww,) + tuple(params[i][1:])
            return loss_of(layers, x)

        def with_b(bb, i=i):
            layers = list(params)
            layers[i] = (params[i][0], bb) + tuple(params[i][2:])
            return loss_of(layers, x)

        assert_grad(net.gradients()[i][0], numeric_grad(with_w, w), f"{title} {loss} dW{i}")
        assert_grad(net.gradients()[i][1], numeric_grad(with_b, b), f"{title} {loss} db{i}")
    if len(params) > 1:
        # HeadNetwork's dX of layer 1 is the gradient wrt layer 0's activation output
        _, cache = ref.forward(params, x, positions)
        a0 = ref.act(params[0][2], cache[0][1], params[0][3], params[0][4])
        num = numeric_grad(lambda aa: reference(ref.forward(params[1:], aa)[0], y)[0], a0)
        assert_grad(net._buf.dx[1], num, f"{title} {loss} dX1")


@pytest.mark.parametrize("act", ["", "Relu", "Tanh"])
def test_dense_input_gradient_against_finite_differences(act, threads):
    """dX of one dense layer (what the layer below receives), with the loss on top."""
    rng = np.random.default_rng(11)
    m, k, n = 4, 7, 3
    w, b = f32(rng.normal(size=(k, n))), f32(rng.normal(size=n))
    x = f32(rng.normal(size=(m, k)))
    y = np.array([0, 2, 1, 2])
    z, a = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    scratch = np.empty(k * m + n * m, np.float32)
    K.dense_forward(x, f32(w.T), b, z, a, scratch, ACT_CODES[act], 0.0, 0.0, threads)
    g = np.empty((m, n), np.float32)
    K.softmax_cross_entropy(a, y.astype(np.int64), EMPTY, g, threads)
    K.act_backward(z, g, g, ACT_CODES[act], 0.0, 0.0, threads)
    dwt, db, dx = np.empty((n, k), np.float32), np.empty(n, np.float32), np.empty((m, k), np.float32)
    K.dense_backward(x, f32(w.T), g, dwt, db, dx, scratch, threads)
    dw = dwt.T
    layer = lambda xx: ref.softmax_xent(ref.act(act, xx @ w.astype(np.float64) + b), y)[0]
    assert_grad(dx, numeric_grad(layer, x.astype(np.float64)), f"dX {act}")
    assert_grad(dw, numeric_grad(lambda ww: ref.softmax_xent(ref.act(act, x.astype(np.float64) @ ww + b), y)[0],
                                 w.astype(np.float64)), f"dW {act}")


def test_sigmoid_loss_on_logits_when_last_activation_is_sigmoid():
    """logits_last: the loss reads z of a Sigmoid layer; gradients are those of BCE-with-logits."""
    rng = np.random.default_rng(7)
    w, b = f32(rng.normal(size=(6, 3))), f32(rng.normal(size=3))
    x = f32(rng.normal(size=(4, 6)))
    t = (rng.random((4, 3)) > 0.5).astype(np.float64)
    net = HeadNetwork([w], [b], [("Sigmoid", 0.0, 0.0)], [True], logits_last=True)
    out = net.forward(x, 4)
    np.testing.assert_allclose(out, x.astype(np.float64) @ w + b, atol=1e-5)
    g = np.empty_like(out)
    K.sigmoid_cross_entropy(out, f32(t), EMPTY, g)
    net.backward(g)
    num = numeric_grad(lambda ww: ref.sigmoid_xent(x.astype(np.float64) @ ww + b, t)[0], w.astype(np.float64))
    assert_grad(net.gradients()[0][0], num, "dW")


def test_untrained_bias_stays_zero_gradient():
    rng = np.random.default_rng(2)
    net = HeadNetwork([f32(rng.normal(size=(4, 3)))], [np.zeros(3, np.float32)], [("", 0, 0)], [False])
    out = net.forward(f32(rng.normal(size=(5, 4))), 5)
    g = np.empty_like(out)
    K.softmax_cross_entropy(out, np.array([0, 1, 2, 0, 1], np.int64), EMPTY, g)
    net.backward(g)
    assert np.all(net.gradients()[0][1] == 0)
    assert len(net.parameters()) == 1
