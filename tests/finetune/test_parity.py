"""Five epochs of training on fixed features give the weights and losses of an independent numpy
implementation (train_reference.py) and of PyTorch (when importable) to 1e-5."""
import numpy as np
import pytest

import fastcnn
from helpers import ir_model
import train_reference as ref

K_IN, HIDDEN, N_CLS, N_SAMPLES = 12, 9, 4, 70   # 70 samples, batch 16: a short last batch
EPOCHS, BATCH, SEED = 5, 16, 3

OPTIMIZERS = {
    "sgd-momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=False, weight_decay=0.0),
    "sgd-nesterov": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": dict(optimizer="adam", lr=0.01, weight_decay=0.0),
    "adamw": dict(optimizer="adam", lr=0.01, weight_decay=0.05),
}


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_SAMPLES, K_IN)).astype(np.float32)
    y = rng.integers(0, N_CLS, N_SAMPLES)
    w1 = (rng.normal(size=(K_IN, HIDDEN)) * 0.4).astype(np.float32)
    b1 = (rng.normal(size=HIDDEN) * 0.1).astype(np.float32)
    w2 = (rng.normal(size=(HIDDEN, N_CLS)) * 0.4).astype(np.float32)
    b2 = (rng.normal(size=N_CLS) * 0.1).astype(np.float32)
    return x, y, w1, b1, w2, b2


def _model(layers):
    """A model that is only a head: Gemm (+ Relu + Gemm) + Softmax on a (N, 12) input; weights
    stored transposed (transB=1), as PyTorch exports Linear layers."""
    x, y, w1, b1, w2, b2 = _data()
    if layers == 1:
        nodes = [("Gemm", ["x", "W2", "B2"], ["z"], {"transB": 1}), ("Softmax", ["z"], ["p"])]
        inits = {"W2": np.ascontiguousarray(w1[:, :N_CLS].T), "B2": b1[:N_CLS]}
    else:
        nodes = [("Gemm", ["x", "W1", "B1"], ["h"], {"transB": 1}), ("Relu", ["h"], ["r"]),
                 ("Gemm", ["r", "W2", "B2"], ["z"], {"transB": 1}), ("Softmax", ["z"], ["p"])]
        inits = {"W1": np.ascontiguousarray(w1.T), "B1": b1, "W2": np.ascontiguousarray(w2.T), "B2": b2}
    return ir_model(nodes, {"x": (None, K_IN)}, ["p"], inits)


def _tuner(layers, opt):
    kw = dict(opt)
    extra = {k: kw.pop(k) for k in ("momentum", "nesterov") if k in kw}
    return fastcnn.FineTuner(_model(layers), train_layers=layers, seed=SEED, **kw, **extra)


def _reference_optimizer(opt):
    if opt["optimizer"] == "sgd":
        return ref.SGD(opt["momentum"], opt["nesterov"], opt["weight_decay"])
    return ref.AdamW(wd=opt["weight_decay"])


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_matches_numpy_reference(name, layers):
    opt = OPTIMIZERS[name]
    x, y, *_ = _data()
    tuner = _tuner(layers, opt)
    start = tuner.get_weights()
    history = tuner.fit(x, y, epochs=EPOCHS, batch_size=BATCH, progress=False)
    acts = ["Relu", ""] if layers == 2 else [""]
    ref_layers = [(w, b, a, 0.0, 0.0) for (w, b), a in zip(start, acts)]
    want, losses = ref.train(ref_layers, x, y, ref.softmax_xent, _reference_optimizer(opt),
                             opt["lr"], EPOCHS, BATCH, SEED)
    np.testing.assert_allclose(history["loss"], losses, atol=1e-5, rtol=0)
    for (w, b), (wr, br, *_) in zip(tuner.get_weights(), want):
        np.testing.assert_allclose(w, wr, atol=1e-5, rtol=0)
        np.testing.assert_allclose(b, br, atol=1e-5, rtol=0)
    # the training did move the weights (a parity test of a no-op would prove nothing)
    assert np.abs(tuner.get_weights()[-1][0] - start[-1][0]).max() > 1e-3


def test_reference_parity_detects_a_wrong_optimizer():
    """The comparison above can fail: Nesterov vs plain momentum differ by far more than 1e-5."""
    x, y, *_ = _data()
    tuner = _tuner(1, OPTIMIZERS["sgd-nesterov"])
    start = tuner.get_weights()
    tuner.fit(x, y, epochs=EPOCHS, batch_size=BATCH, progress=False)
    want, _ = ref.train([(start[0][0], start[0][1], "", 0.0, 0.0)], x, y, ref.softmax_xent,
                        ref.SGD(0.9, False, 1e-3), 0.05, EPOCHS, BATCH, SEED)
    assert np.abs(tuner.get_weights()[0][0] - want[0][0]).max() > 1e-4


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_matches_torch(name, layers):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    opt = OPTIMIZERS[name]
    x, y, *_ = _data()
    tuner = _tuner(layers, opt)
    start = tuner.get_weights()
    history = tuner.fit(x, y, epochs=EPOCHS, batch_size=BATCH, progress=False)

    mods = []
    for i, (w, b) in enumerate(start):
        lin = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        if i < len(start) - 1:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods)
    if opt["optimizer"] == "sgd":
        o = torch.optim.SGD(net.parameters(), lr=opt["lr"], momentum=opt["momentum"],
                            nesterov=opt["nesterov"], weight_decay=opt["weight_decay"])
    else:
        o = torch.optim.AdamW(net.parameters(), lr=opt["lr"], weight_decay=opt["weight_decay"])
    lossf = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng([SEED, 1])  # the documented epoch order
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    losses = []
    for _ in range(EPOCHS):
        order = rng.permutation(N_SAMPLES)
        total = 0.0
        for s in range(0, N_SAMPLES, BATCH):
            idx = torch.from_numpy(order[s:s + BATCH])
            o.zero_grad()
            loss = lossf(net(xt[idx]), yt[idx])
            loss.backward()
            o.step()
            total += loss.item() * len(idx)
        losses.append(total / N_SAMPLES)
    np.testing.assert_allclose(history["loss"], losses, atol=1e-5, rtol=0)
    linears = [m for m in mods if isinstance(m, torch.nn.Linear)]
    for (w, b), lin in zip(tuner.get_weights(), linears):
        np.testing.assert_allclose(w, lin.weight.detach().numpy().T, atol=1e-5, rtol=0)
        np.testing.assert_allclose(b, lin.bias.detach().numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("loss", ["sigmoid_cross_entropy", "mse"])
def test_other_losses_match_numpy_reference(loss):
    x, _, *_ = _data()
    rng = np.random.default_rng(5)
    y = (rng.random((N_SAMPLES, N_CLS)) > 0.6).astype(np.float32) if loss != "mse" \
        else rng.normal(size=(N_SAMPLES, N_CLS)).astype(np.float32)
    tuner = fastcnn.FineTuner(_model(1), loss=loss, optimizer="adam", lr=0.01, seed=SEED)
    start = tuner.get_weights()
    history = tuner.fit(x, y, epochs=EPOCHS, batch_size=BATCH, progress=False)
    reference = ref.sigmoid_xent if loss != "mse" else ref.mse
    want, losses = ref.train([(start[0][0], start[0][1], "", 0.0, 0.0)], x, y, reference,
                             ref.AdamW(), 0.01, EPOCHS, BATCH, SEED)
    np.testing.assert_allclose(history["loss"], losses, atol=1e-5, rtol=0)
    np.testing.assert_allclose(tuner.get_weights()[0][0], want[0][0], atol=1e-5, rtol=0)
