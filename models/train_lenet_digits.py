"""Train LeNet-5 on scikit-learn's 8x8 digits (classes 0-7) and export the shipped example files.

    python models/train_lenet_digits.py        # needs torch and scikit-learn (not fastcnn deps)

Writes, next to this script:
    lenet5_digits.onnx   LeNet-5, input "input" float32 (N, 1, 32, 32), output "logits" (N, 8)
    lenet5_digits.fcnn   the same model converted with fastcnn.convert, labels "0".."7" attached
    digits_samples.npz   preprocessed samples, see SPLITS below

Preprocessing (the same for every array in digits_samples.npz, already applied there):
    1. scale:     x = pixels / 16            (load_digits pixels are integers 0..16) -> [0, 1]
    2. upsample:  nearest neighbour, each pixel becomes a 4x4 block: 8x8 -> 32x32
                  (x.repeat(4, axis=-2).repeat(4, axis=-1))
    3. normalise: x = (x - 0.5) / 0.5        -> [-1, 1]
    layout (N, 1, 32, 32) float32, NCHW.

Splits of the 1,797 images (per class, after one seeded shuffle; disjoint):
    test:   TEST_PER_CLASS images of every digit 0-9 (x_test, y_test); never trained on.
            x, y are the digits 0-7 of that test split: what the shipped 8-class model can answer.
    new:    NEW_PER_CLASS images of 8 and 9 and REPLAY_PER_CLASS of each of 0-7 (x_new, y_new),
            a small pool for fine-tuning the model to 10 classes later; never trained on.
    train:  every remaining image of 0-7. The remaining 8s and 9s are not used.

Training: Adam (lr 1e-3), 60 epochs, batch 32, cross-entropy, random shifts of up to 4 pixels,
seed 0, deterministic torch ops,
one thread. The model outputs logits (no softmax layer): fine-tuning replaces the last Gemm.
"""
from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
CLASSES = 8                 # the shipped model knows digits 0..7
TEST_PER_CLASS = 45
NEW_PER_CLASS = 40          # 8s and 9s in the fine-tuning pool
REPLAY_PER_CLASS = 20       # 0-7 examples in the fine-tuning pool (replayed to keep 0-7)
EPOCHS = 60
MAX_SHIFT = 4               # training augmentation: random shifts of up to 4 pixels (one source pixel)
BATCH = 32
LR = 1e-3
PREPROCESSING = ("x = pixels/16 (sklearn load_digits 8x8, values 0..16) -> nearest-neighbour "
                 "upsample 8x8 to 32x32 (each pixel a 4x4 block) -> (x - 0.5)/0.5; "
                 "float32 NCHW (N, 1, 32, 32)")


def preprocess(images: np.ndarray) -> np.ndarray:
    """images: (N, 8, 8) load_digits pixels 0..16 -> float32 (N, 1, 32, 32) in [-1, 1]."""
    x = images.astype(np.float32) / 16.0
    x = x.repeat(4, axis=-2).repeat(4, axis=-1)
    x = (x - 0.5) / 0.5
    return x[:, None, :, :].astype(np.float32)


def split(labels: np.ndarray, rng: np.random.Generator):
    """Index arrays (test, new, train) following SPLITS in the module docstring."""
    test, new, train = [], [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.extend(idx[:TEST_PER_CLASS])
        rest = idx[TEST_PER_CLASS:]
        if c < CLASSES:
            new.extend(rest[:REPLAY_PER_CLASS])
            train.extend(rest[REPLAY_PER_CLASS:])
        else:
            new.extend(rest[:NEW_PER_CLASS])
    test, new, train = (np.sort(np.array(a, dtype=np.int64)) for a in (test, new, train))
    assert not (set(test) & set(new)) and not (set(test) & set(train)) and not (set(new) & set(train))
    return test, new, train


def lenet5(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),      # (N,1,32,32) -> (N,6,14,14)
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),     # -> (N,16,5,5)
        nn.Flatten(),                                        # -> (N,400)
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, CLASSES),                              # logits (N,8)
    )


def shift(torch, x, gen):
    """Random translation of each image by up to MAX_SHIFT pixels (background -1 fills in).

    Features that tolerate small shifts generalise better to digits the model never saw, which
    is what later fine-tuning (adding 8 and 9) builds on."""
    pad = torch.nn.functional.pad(x, (MAX_SHIFT,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (len(x), 2), generator=gen)
    return torch.stack([pad[i, :, dy:dy + 32, dx:dx + 32] for i, (dy, dx) in enumerate(offsets.tolist())])


def train(torch, x, y):
    torch.manual_seed(SEED)
    model = lenet5(torch)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(xt), BATCH):
            b = order[start:start + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(shift(torch, xt[b], gen)), yt[b])
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1:3d}  loss {total / len(xt):.4f}")
    model.eval()
    return model


def export_onnx(torch, model, path, labels):
    import onnx
    dummy = torch.zeros(1, 1, 32, 32)
    torch.onnx.export(model, (dummy,), path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=13,
                      dynamo=False)
    proto = onnx.load(path)
    proto.producer_name = "fastcnn models/train_lenet_digits.py (torch)"
    proto.doc_string = "LeNet-5 on sklearn digits 0-7; " + PREPROCESSING
    entry = proto.metadata_props.add()
    entry.key, entry.value = "labels", ",".join(labels)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def main() -> int:
    import torch
    from sklearn.datasets import load_digits

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    digits = load_digits()
    images, labels = digits.images, digits.target.astype(np.int64)
    test, new, train_idx = split(labels, np.random.default_rng(SEED))
    x_all = preprocess(images)
    known = labels[test] < CLASSES

    model = train(torch, x_all[train_idx], labels[train_idx])
    with torch.no_grad():
        logits = model(torch.from_numpy(x_all[test][known])).numpy()
    acc = float((logits.argmax(1) == labels[test][known]).mean())
    print(f"train {len(train_idx)} images of 0-7; held-out 0-7 accuracy (torch): {acc:.4f} "
          f"({int(round(acc * known.sum()))}/{known.sum()})")

    labels_txt = [str(c) for c in range(CLASSES)]
    onnx_path = os.path.join(HERE, "lenet5_digits.onnx")
    fcnn_path = os.path.join(HERE, "lenet5_digits.fcnn")
    npz_path = os.path.join(HERE, "digits_samples.npz")
    export_onnx(torch, model, onnx_path, labels_txt)

    import fastcnn
    fastcnn.convert(onnx_path, fcnn_path, metadata={"labels": labels_txt, "preprocessing": PREPROCESSING})
    np.savez_compressed(
        npz_path,
        x=x_all[test][known], y=labels[test][known],
        x_test=x_all[test], y_test=labels[test],
        x_new=x_all[new], y_new=labels[new],
    )
    with fastcnn.load(fcnn_path) as m:
        got = m(x_all[test][known])
    fc_acc = float((got.argmax(1) == labels[test][known]).mean())
    print(f"fastcnn on {os.path.basename(fcnn_path)}: held-out 0-7 accuracy {fc_acc:.4f}, "
          f"max |fastcnn - torch| logit difference {float(np.abs(got - logits).max()):.2e}")
    for p in (onnx_path, fcnn_path, npz_path):
        print(f"wrote {os.path.relpath(p)} ({os.path.getsize(p):,} bytes)")
    return 0 if acc > 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
