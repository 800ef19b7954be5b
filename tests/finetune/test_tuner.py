"""FineTuner behaviour: class rows kept or re-initialised, labels, save/load, early stopping,
augmentation, class weights, schedules, evaluation, threads and input validation."""
import warnings

import numpy as np
import pytest

import fastcnn
from fastcnn.errors import FineTuneError
from fastcnn.finetune import FineTuneWarning
from fastcnn.finetune.augment import Augmenter, parse_augment
from fastcnn.ir.graph import TensorSpec
from helpers import ir_model


def rnd(rng, *shape, scale=0.5):
    return (rng.normal(size=shape) * scale).astype(np.float32)


def image_model(rng, n_classes=3, labels=None, batch=None):
    """Conv -> Relu -> GAP -> Flatten -> Gemm -> Softmax on (N, 2, 5, 6) images."""
    nodes = [("Conv", ["x", "Wc", "Bc"], ["c"], {"pads": [1, 1, 1, 1]}), ("Relu", ["c"], ["r"]),
             ("GlobalAveragePool", ["r"], ["g"]), ("Flatten", ["g"], ["f"]),
             ("Gemm", ["f", "W", "B"], ["z"], {"transB": 1}), ("Softmax", ["z"], ["p"])]
    inits = {"Wc": rnd(rng, 8, 2, 3, 3), "Bc": rnd(rng, 8), "W": rnd(rng, n_classes, 8), "B": rnd(rng, n_classes)}
    meta = {"labels": labels} if labels else None
    return ir_model(nodes, {"x": (batch, 2, 5, 6)}, ["p"], inits, metadata=meta)


def blobs(rng, n_per_class, n_classes, k=8, spread=0.3):
    """Feature-space clusters: a linearly separable (N, k) problem."""
    centers = rng.normal(size=(n_classes, k)) * 2
    x = np.concatenate([centers[c] + rng.normal(size=(n_per_class, k)) * spread for c in range(n_classes)])
    y = np.repeat(np.arange(n_classes), n_per_class)
    return x.astype(np.float32), y


def dense_model(rng, k=8, n=3, labels=None):
    meta = {"labels": labels} if labels else None
    return ir_model([("Gemm", ["x", "W", "B"], ["z"]), ("Softmax", ["z"], ["p"])], {"x": (None, k)},
                    ["p"], {"W": rnd(rng, k, n), "B": rnd(rng, n)}, metadata=meta)


# ----------------------------------------------------------------------------- classes and labels
def test_keep_classes_keeps_rows_and_seeds_new_ones():
    rng = np.random.default_rng(0)
    model = dense_model(rng)
    old_w, old_b = model.graph.initializers["W"], model.graph.initializers["B"]
    t = fastcnn.FineTuner(model, num_classes=5, seed=4)
    w, b = t.get_weights()[0]
    assert w.shape == (8, 5) and b.shape == (5,)
    np.testing.assert_array_equal(w[:, :3], old_w)
    np.testing.assert_array_equal(b[:3], old_b)
    # new rows: seeded, at the scale of the existing ones, bias at their mean
    assert 0.3 < w[:, 3:].std() / old_w.std() < 3.0
    np.testing.assert_allclose(b[3:], old_b.mean(), rtol=1e-6)
    again = fastcnn.FineTuner(model, num_classes=5, seed=4).get_weights()[0][0]
    other = fastcnn.FineTuner(model, num_classes=5, seed=5).get_weights()[0][0]
    np.testing.assert_array_equal(w, again)
    assert np.abs(w[:, 3:] - other[:, 3:]).max() > 1e-3
    # before any training the old classes' logits are those of the original model
    x = rnd(rng, 4, 8, scale=1.0)
    z_old = x @ old_w + old_b
    p = t.predict(x)
    np.testing.assert_allclose(np.log(p[:, 0] / p[:, 1]), z_old[:, 0] - z_old[:, 1], atol=1e-4)
    # fewer classes with keep_classes: the first rows stay
    np.testing.assert_array_equal(fastcnn.FineTuner(model, num_classes=2).get_weights()[0][0], old_w[:, :2])


def test_reset_classes_reinitialises_the_head():
    rng = np.random.default_rng(1)
    model = dense_model(rng, labels=["a", "b", "c"])
    t = fastcnn.FineTuner(model, num_classes=4, keep_classes=False)
    w, b = t.get_weights()[0]
    limit = np.sqrt(6 / (8 + 4))
    assert np.abs(w).max() <= limit and np.abs(w).max() > limit / 2
    assert np.all(b == 0)
    assert t.labels is None and "labels" not in t.model.metadata  # old names no longer apply


def test_labels_default_given_and_checked(tmp_path):
    rng = np.random.default_rng(2)
    model = dense_model(rng, labels=["cat", "dog", "eel"])
    assert fastcnn.FineTuner(model, num_classes=5).labels == ["cat", "dog", "eel", "3", "4"]
    t = fastcnn.FineTuner(model, num_classes=4, labels=["cat", "dog", "eel", "fox"])
    assert t.model.labels == ["cat", "dog", "eel", "fox"]
    t.model.save(tmp_path / "m.fcnn")
    assert fastcnn.load(tmp_path / "m.fcnn").labels == ["cat", "dog", "eel", "fox"]
    with pytest.raises(FineTuneError, match="3 labels given for 4 classes"):
        fastcnn.FineTuner(model, num_classes=4, labels=["a", "b", "c"])


# ----------------------------------------------------------------------------- training results
def test_learns_a_new_class_and_saves_and_loads(tmp_path):
    rng = np.random.default_rng(3)
    x, y = blobs(rng, 30, 4)
    model = dense_model(rng, n=3)
    t = fastcnn.FineTuner(model, num_classes=4, lr=0.05)
    h = t.fit(x, y, epochs=30, batch_size=16, progress=False)
    assert h["loss"][-1] < h["loss"][0] / 4
    assert t.evaluate(x, y)["accuracy"] > 0.95
    path = tmp_path / "tuned.fcnn"
    t.model.save(path)
    loaded = fastcnn.load(path)
    xt = rnd(rng, 11, 8, scale=2.0)
    np.testing.assert_array_equal(loaded.run(None, {"x": xt})[0], t.model.run(None, {"x": xt})[0])
    assert loaded.outputs[0].shape == (None, 4)


def test_image_model_save_load_same_outputs(tmp_path):
    rng = np.random.default_rng(4)
    model = image_model(rng)
    x = rnd(rng, 20, 2, 5, 6, scale=1.0)
    y = rng.integers(0, 4, 20)
    t = fastcnn.FineTuner(model, num_classes=4, lr=0.05)
    t.fit(x, y, epochs=3, batch_size=8, progress=False)
    t.model.save(tmp_path / "m.fcnn")
    loaded = fastcnn.load(tmp_path / "m.fcnn")
    np.testing.assert_array_equal(loaded.run(None, {"x": x})[0], t.model.run(None, {"x": x})[0])
    np.testing.assert_array_equal(t.predict(x), t.model.run(None, {"x": x})[0])


def test_evaluate_agrees_with_predict():
    rng = np.random.default_rng(5)
    model = image_model(rng)
    x = rnd(rng, 13, 2, 5, 6, scale=1.0)
    y = rng.integers(0, 3, 13)
    t = fastcnn.FineTuner(model, lr=0.05)
    t.fit(x, y, epochs=2, batch_size=4, progress=False)
    p = t.predict(x).astype(np.float64)
    ev = t.evaluate(x, y)
    assert ev["accuracy"] == np.mean(p.argmax(1) == y)
    assert abs(ev["loss"] - np.mean(-np.log(p[np.arange(13), y]))) < 1e-5


def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(6)
    x, y = blobs(rng, 20, 3, spread=2.0)       # overlapping classes
    xv, yv = blobs(rng, 20, 3, spread=2.0)
    yv = rng.permutation(yv)                   # validation labels unrelated: val loss rises
    t = fastcnn.FineTuner(dense_model(rng), lr=0.1, optimizer="sgd", momentum=0.9)
    h = t.fit(x, y, epochs=40, batch_size=8, validation=(xv, yv), early_stopping=3, progress=False)
    assert h["stopped_epoch"] is not None and len(h["val_loss"]) == h["stopped_epoch"] + 1
    best = h["best_epoch"]
    assert h["val_loss"][best] == min(h["val_loss"])
    assert abs(t.evaluate(xv, yv)["loss"] - h["val_loss"][best]) < 1e-6
    with pytest.raises(FineTuneError, match="needs validation"):
        t.fit(x, y, epochs=2, early_stopping=2, progress=False)


def test_class_weights_change_the_training():
    rng = np.random.default_rng(7)
    x, y = blobs(rng, 10, 3, spread=1.5)
    x, y = x[:25], y[:25]  # class 2 under-represented
    runs = {}
    for cw in (None, "balanced", [1.0, 1.0, 5.0]):
        t = fastcnn.FineTuner(dense_model(np.random.default_rng(0)), lr=0.05, seed=1)
        t.fit(x, y, epochs=3, batch_size=8, progress=False, class_weights=cw)
        runs[str(cw)] = t.get_weights()[0][0]
    assert np.abs(runs["None"] - runs["balanced"]).max() > 1e-4
    assert np.abs(runs["balanced"] - runs[str([1.0, 1.0, 5.0])]).max() > 1e-4
    with pytest.raises(FineTuneError, match="class_weights must hold 3"):
        t.fit(x, y, epochs=1, progress=False, class_weights=[1, 2])


@pytest.mark.parametrize("schedule,expect", [
    ("constant", [0.1] * 6),
    ("step", [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]),
    ("cosine", [0.1 * 0.5 * (1 + np.cos(np.pi * e / 6)) for e in range(6)]),
])
def test_learning_rate_schedules(schedule, expect):
    rng = np.random.default_rng(8)
    x, y = blobs(rng, 5, 3)
    t = fastcnn.FineTuner(dense_model(rng), lr=0.1, lr_schedule=schedule, lr_step_size=2, lr_gamma=0.5)
    h = t.fit(x, y, epochs=6, progress=False)
    np.testing.assert_allclose(h["lr"], expect, rtol=1e-12)


def test_one_and_two_threads_train_alike():
    rng = np.random.default_rng(9)
    x = rnd(rng, 600, 64, scale=1.0)   # large enough for the kernels' threaded paths
    y = rng.integers(0, 100, 600)
    got = []
    for threads in (1, 2):
        model = ir_model([("Gemm", ["x", "W", "B"], ["z"]), ("Relu", ["z"], ["r"]),
                          ("Gemm", ["r", "W2", "B2"], ["o"])], {"x": (None, 64)}, ["o"],
                         {"W": rnd(np.random.default_rng(1), 64, 96), "B": np.zeros(96, np.float32),
                          "W2": rnd(np.random.default_rng(2), 96, 100), "B2": np.zeros(100, np.float32)},
                         num_threads=threads)
        t = fastcnn.FineTuner(model, train_layers=2, lr=0.01)
        t.fit(x, y, epochs=2, batch_size=512, progress=False)
        got.append(t.get_weights())
    for (w1, b1), (w2, b2) in zip(*got):
        np.testing.assert_allclose(w1, w2, atol=1e-5)
        np.testing.assert_allclose(b1, b2, atol=1e-5)


def test_fixed_batch_model_is_fed_its_batch_size():
    rng = np.random.default_rng(10)
    model = image_model(rng, batch=1)
    x = rnd(rng, 5, 2, 5, 6, scale=1.0)
    t = fastcnn.FineTuner(model, num_classes=4)
    t.fit(x, rng.integers(0, 4, 5), epochs=2, batch_size=2, progress=False)
    p = t.predict(x)
    assert p.shape == (5, 4)
    np.testing.assert_allclose(p[2:3], t.model.run(None, {"x": x[2:3]})[0], atol=1e-6)


def test_multilabel_sigmoid_head():
    rng = np.random.default_rng(11)
    model = ir_model([("Gemm", ["x", "W", "B"], ["z"], {"activation": "Sigmoid"})], {"x": (None, 8)},
                     ["z"], {"W": rnd(rng, 8, 4), "B": rnd(rng, 4)})
    x = rnd(rng, 60, 8, scale=1.0)
    y = (x[:, :4] > 0).astype(np.float32)     # label j on when feature j is positive
    t = fastcnn.FineTuner(model, loss="sigmoid_cross_entropy", lr=0.05)
    h = t.fit(x, y, epochs=40, batch_size=16, progress=False)
    assert h["accuracy"][-1] > 0.9
    p = t.predict(x)
    assert np.all((p > 0) & (p < 1))          # the model still ends in its Sigmoid
    assert np.mean((p > 0.5) == (y > 0.5)) > 0.9


def test_mse_with_class_indices_and_with_a_matrix():
    rng = np.random.default_rng(12)
    x, y = blobs(rng, 10, 3)
    t = fastcnn.FineTuner(dense_model(rng), loss="mse", lr=0.05)
    h = t.fit(x, y, epochs=5, progress=False)
    assert h["accuracy"][0] is not None and h["loss"][-1] < h["loss"][0]
    h2 = t.fit(x, rng.normal(size=(30, 3)), epochs=2, progress=False)
    assert h2["accuracy"] == [None, None]


# ----------------------------------------------------------------------------- augmentation
def test_augmentation_warns_runs_trunk_and_is_seeded():
    rng = np.random.default_rng(13)
    model = image_model(rng)
    x = rnd(rng, 12, 2, 5, 6, scale=1.0)
    y = rng.integers(0, 3, 12)
    results = []
    for _ in range(2):
        t = fastcnn.FineTuner(model, lr=0.05, seed=3)
        with pytest.warns(FineTuneWarning, match="feature cache is off"):
            t.fit(x, y, epochs=2, batch_size=4, augment=True, progress=False)
        results.append(t.get_weights()[0][0])
    np.testing.assert_array_equal(*results)
    plain = fastcnn.FineTuner(model, lr=0.05, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain.fit(x, y, epochs=2, batch_size=4, progress=False)
    assert np.abs(plain.get_weights()[0][0] - results[0]).max() > 1e-5


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_augmenter_flips_and_shifts(layout):
    img = np.arange(2 * 4 * 5, dtype=np.float32).reshape(1, 2, 4, 5)
    if layout == "NHWC":
        img = img.transpose(0, 2, 3, 1)
    spec = TensorSpec("x", (None,) + img.shape[1:], layout=layout)
    h_ax, w_ax = (2, 3) if layout == "NCHW" else (1, 2)
    batch = np.repeat(img, 64, axis=0)
    out = Augmenter({"flip": True, "shift": 0}, spec, 0)(batch)
    flipped = np.all(out == np.flip(img, axis=w_ax), axis=(1, 2, 3))
    same = np.all(out == img, axis=(1, 2, 3))
    assert np.all(flipped | same) and 10 < flipped.sum() < 54
    out = Augmenter({"flip": False, "shift": 1}, spec, 0)(batch)
    for o in out:
        # every result is the image moved by at most one pixel each way, zero-filled
        ok = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                moved = np.roll(np.roll(img[0], dy, axis=h_ax - 1), dx, axis=w_ax - 1)
                mask = np.ones_like(moved, bool)
                sl = [slice(None)] * 3
                if dy:
                    sl[h_ax - 1] = slice(0, 1) if dy > 0 else slice(-1, None)
                    mask[tuple(sl)] = False
                    sl[h_ax - 1] = slice(None)
                if dx:
                    sl[w_ax - 1] = slice(0, 1) if dx > 0 else slice(-1, None)
                    mask[tuple(sl)] = False
                ok |= bool(np.all(np.where(mask, moved, 0) == o))
        assert ok
    with pytest.raises(FineTuneError):
        parse_augment({"rotate": 10})
    with pytest.raises(FineTuneError):
        parse_augment({"shift": 1.5})


# ----------------------------------------------------------------------------- validation
def test_bad_arguments_are_clear_errors():
    rng = np.random.default_rng(14)
    model = image_model(rng)
    x = rnd(rng, 4, 2, 5, 6)
    bad_ctor = [dict(loss="hinge"), dict(optimizer="rmsprop"), dict(lr=0), dict(lr=float("nan")),
                dict(train_layers=0), dict(num_classes=0), dict(seed=-1), dict(lr_schedule="exp"),
                dict(weight_decay=-1)]
    for kw in bad_ctor:
        with pytest.raises(FineTuneError):
            fastcnn.FineTuner(model, **kw)
    with pytest.raises(FineTuneError, match="must be a fastcnn.Model"):
        fastcnn.FineTuner(42)
    t = fastcnn.FineTuner(model)
    with pytest.raises(FineTuneError, match=r"shape \[4, 2, 6, 5\].*takes \[N, 2, 5, 6\]"):
        t.fit(x.transpose(0, 1, 3, 2), [0, 1, 2, 0], progress=False)
    with pytest.raises(FineTuneError, match=r"in \[0, 3\)"):
        t.fit(x, [0, 1, 2, 3], progress=False)
    with pytest.raises(FineTuneError, match="4 samples but y has 3"):
        t.fit(x, [0, 1, 2], progress=False)
    with pytest.raises(FineTuneError, match="NaN"):
        t.fit(np.full_like(x, np.nan), [0, 1, 2, 0], progress=False)
    with pytest.raises(FineTuneError, match="integers"):
        t.fit(x, [0.5, 1, 2, 0], progress=False)
    with pytest.raises(FineTuneError, match="epochs"):
        t.fit(x, [0, 1, 2, 0], epochs=0, progress=False)
    with pytest.raises(FineTuneError, match=r"\(N, 3\)"):
        fastcnn.FineTuner(model, loss="sigmoid_cross_entropy").fit(x, [0, 1, 2, 0], progress=False)
    with pytest.raises(FineTuneError, match="rank 2"):
        fastcnn.FineTuner(dense_model(rng)).fit(rnd(rng, 4, 8), [0, 1, 2, 0], augment=True, progress=False)


def test_progress_plain_text_fallback(capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tqdm(name, *a, **k):
        if name == "tqdm":
            raise ImportError("no tqdm")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    rng = np.random.default_rng(15)
    x, y = blobs(rng, 4, 3)
    fastcnn.FineTuner(dense_model(rng)).fit(x, y, epochs=2, validation=(x, y), progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2  loss" in err and "epoch 2/2" in err and "val_accuracy" in err
