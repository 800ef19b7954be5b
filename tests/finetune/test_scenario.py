"""The real scenario: a LeNet-5 trained on digits 0-7 (8 classes) learns 8 and 9 on the device
from a few dozen examples each, without forgetting 0-7.

Files (made by the models/ script on another branch): models/lenet5_digits.fcnn (or .onnx) and
models/digits_samples.npz with x_test/y_test (held out, all ten digits) and x_new/y_new (a few
dozen 8s and 9s plus some 0-7 examples). Set FASTCNN_DIGITS_DIR to use another folder. Without
the files the test is skipped, saying so.

Recipe: keep the 8 trained classes and add 2; train the dense layers of the head (up to 3) with
Adam at a small learning rate and class-balanced weights (the fine-tuning set holds far more 8s
and 9s than examples of each old class; unweighted, the new classes would learn that prior and
claim old-class samples).

Target (the issue's): new classes >= 90% and old classes losing <= 3 points. With models/ as
of this writing (LeNet-5 trained with shift augmentation; 40 eights, 40 nines and 20 of each old
digit in the fine-tuning pool) the recipe gives old 99.17% -> 97.50% and new 94.4%.
"""
import os

import numpy as np
import pytest

import fastcnn
from fastcnn.errors import FineTuneError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FOLDER = os.environ.get("FASTCNN_DIGITS_DIR") or os.path.join(ROOT, "models")
RECIPE = dict(lr=1e-4, epochs=60, batch_size=16, class_weights="balanced")


def _files():
    model = next((os.path.join(FOLDER, f) for f in ("lenet5_digits.fcnn", "lenet5_digits.onnx")
                  if os.path.exists(os.path.join(FOLDER, f))), None)
    samples = os.path.join(FOLDER, "digits_samples.npz")
    if model is None or not os.path.exists(samples):
        pytest.skip(f"the digits scenario needs lenet5_digits.fcnn/.onnx and digits_samples.npz "
                    f"in {FOLDER} (produced by the models/ script on another branch; set "
                    f"FASTCNN_DIGITS_DIR to point elsewhere)")
    return model, samples


def _as_input(x, model):
    shape = model.inputs[0].shape
    x = np.asarray(x, np.float32)
    return x.reshape((x.shape[0],) + tuple(shape[1:])) if x.ndim != len(shape) else x


def _accuracy(pred, y, mask):
    return float(np.mean(pred[mask] == y[mask]))


_RESULTS = {}


def _run_scenario():
    """(old accuracy before, old after, new after), computed once per session."""
    if _RESULTS:
        return _RESULTS["values"]
    model_path, samples_path = _files()
    model = fastcnn.load(model_path)
    data = np.load(samples_path)
    x_test, y_test = _as_input(data["x_test"], model), np.asarray(data["y_test"]).astype(np.int64)
    x_new, y_new = _as_input(data["x_new"], model), np.asarray(data["y_new"]).astype(np.int64)
    old, new = y_test < 8, y_test >= 8
    assert model.outputs[0].shape[-1] == 8 and new.any() and old.any()

    before = model(x_test).argmax(axis=1)
    old_before = _accuracy(before, y_test, old)

    for layers in (3, 2, 1):  # all dense layers of LeNet's head, fewer if the model has fewer
        try:
            tuner = fastcnn.FineTuner(model, num_classes=10, keep_classes=True, train_layers=layers,
                                      lr=RECIPE["lr"], seed=0, labels=[str(d) for d in range(10)])
            break
        except FineTuneError:
            continue
    tuner.fit(x_new, y_new, epochs=RECIPE["epochs"], batch_size=RECIPE["batch_size"],
              class_weights=RECIPE["class_weights"], progress=False)
    after = tuner.predict(x_test).argmax(axis=1)
    old_after, new_after = _accuracy(after, y_test, old), _accuracy(after, y_test, new)
    per_digit = {d: _accuracy(after, y_test, y_test == d) for d in (8, 9)}
    print(f"\ndigits scenario ({os.path.basename(model_path)}, train_layers={layers}, "
          f"{len(y_new)} fine-tuning samples: {int((y_new >= 8).sum())} new, "
          f"{int((y_new < 8).sum())} old): old classes {old_before:.2%} -> {old_after:.2%}, "
          f"new classes 0.00% -> {new_after:.2%} (8: {per_digit[8]:.2%}, 9: {per_digit[9]:.2%})")
    assert tuner.model.labels == [str(d) for d in range(10)]
    _RESULTS["values"] = (old_before, old_after, new_after)
    return _RESULTS["values"]


def test_adds_digits_8_and_9_keeping_0_to_7():
    old_before, old_after, new_after = _run_scenario()
    assert new_after >= 0.90, f"new classes reach {new_after:.2%}, target 90%"
    assert old_before - old_after <= 0.03, (f"old classes lose {100 * (old_before - old_after):.1f} "
                                            f"points, target <= 3")
