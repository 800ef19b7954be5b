"""Fine-tuning throughput: the head of ResNet-18 (512 -> N) and MobileNetV2 (1280 -> N) on random
224x224 images, fastcnn's FineTuner beside PyTorch doing the same head training.

    python bench/finetune.py [--images 1000] [--epochs 10] [--classes 10] [--threads 2]

Both sides: frozen backbone features computed once in inference mode (fastcnn: the trunk model
cut from the ONNX graph; PyTorch: the same nn.Module in eval mode under no_grad), then the
Linear head trained with Adam (lr 1e-3), batch 32, the same epochs. Reported separately:
feature extraction, head training, and end to end (tuner set-up + both), as seconds and as
samples x epochs per second. Models have random weights (architecture is what costs time).
Needs torch (and onnx) to build the models; torchvision is used when installed, otherwise the
definitions below. Timings are single runs on a shared machine: read ratios, not absolutes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _paths import use_fastcnn  # noqa: E402

use_fastcnn()


# ----------------------------------------------------------------------------- torch models
def torch_models():
    """name -> (builder() -> nn.Module with a final Linear `head` attribute path, head width)."""
    import torch.nn as nn

    try:
        import torchvision.models as tvm
        return {"resnet18": (lambda: tvm.resnet18(num_classes=1000), 512),
                "mobilenetv2": (lambda: tvm.mobilenet_v2(num_classes=1000), 1280)}
    except ImportError:
        pass

    class Basic(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.relu = nn.ReLU(inplace=True)
            self.down = None
            if stride != 1 or c_in != c_out:
                self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                      nn.MaxPool2d(3, 2, 1)]
            c = 64
            for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [Basic(c, c_out, stride), Basic(c_out, c_out, 1)]
                c = c_out
            self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            return self.fc(self.features(x))

    def conv_bn(c_in, c_out, k, stride, groups=1, act=True):
        mods = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
        return mods + ([nn.ReLU6(inplace=True)] if act else [])

    class Inverted(nn.Module):
        def __init__(self, c_in, c_out, stride, expand):
            super().__init__()
            hidden = c_in * expand
            mods = conv_bn(c_in, hidden, 1, 1) if expand != 1 else []
            mods += conv_bn(hidden, hidden, 3, stride, groups=hidden) + conv_bn(hidden, c_out, 1, 1, act=False)
            self.block = nn.Sequential(*mods)
            self.residual = stride == 1 and c_in == c_out

        def forward(self, x):
            return x + self.block(x) if self.residual else self.block(x)

    class MobileNetV2(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            mods = conv_bn(3, 32, 3, 2)
            c = 32
            for t, c_out, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                   (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
                for i in range(n):
                    mods.append(Inverted(c, c_out, s if i == 0 else 1, t))
                    c = c_out
            mods += conv_bn(c, 1280, 1, 1)
            self.features = nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.classifier = nn.Linear(1280, num_classes)

        def forward(self, x):
            return self.classifier(self.features(x))

    return {"resnet18": (ResNet18, 512), "mobilenetv2": (MobileNetV2, 1280)}


def backbone_of(net):
    """The module minus its final Linear (torchvision and local definitions alike)."""
    import copy
    import torch.nn as nn
    body = copy.deepcopy(net)
    if hasattr(body, "fc"):
        body.fc = nn.Identity()
    else:
        body.classifier = nn.Identity() if isinstance(body.classifier, nn.Linear) else \
            nn.Sequential(*list(body.classifier.children())[:-1])
    return body.eval()


# ----------------------------------------------------------------------------- runs
def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def tile_rows(feats, n):
    """n feature rows from the k computed ones (features of random images are as good as any)."""
    reps = -(-n // len(feats))
    return np.ascontiguousarray(np.concatenate([feats] * reps)[:n])


def run_torch(net, width, x, y, classes, epochs, batch, threads, k_images, repeats):
    import torch
    torch.set_num_threads(threads)
    body = backbone_of(net)
    with torch.no_grad():
        body(torch.from_numpy(x[:1]))  # warm-up: one-time initialisation
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = torch.cat([body(torch.from_numpy(x[s:s + 64])) for s in range(0, k_images, 64)])
    per_image = (time.perf_counter() - t0) / k_images
    feats = torch.from_numpy(tile_rows(feats.numpy(), len(y)))
    yt = torch.from_numpy(y)

    def train(n_epochs=epochs, n=len(y)):
        torch.manual_seed(0)
        head = torch.nn.Linear(width, classes)
        opt = torch.optim.Adam(head.parameters(), lr=1e-3)
        lossf = torch.nn.CrossEntropyLoss()
        for _ in range(n_epochs):
            order = torch.randperm(n)
            for s in range(0, n, batch):
                idx = order[s:s + batch]
                opt.zero_grad()
                lossf(head(feats[idx]), yt[idx]).backward()
                opt.step()

    train(1, 2 * batch)  # warm-up: first-call allocations and dispatch caches
    head = median_time(train, repeats)
    return {"features": per_image * len(y), "head": head}


def head_only_model(tuner, threads):
    """A model that is just the tuner's head on a features input: FineTuner.fit on it runs the
    exact head-training path of the full model after the trunk (trunk = identity)."""
    from fastcnn.ir.graph import Graph, Node, TensorSpec
    from fastcnn.model import Model
    (w, b), = tuner.get_weights()
    k = w.shape[0]
    g = Graph("head", [TensorSpec("features", (None, k))], [TensorSpec("logits", (None, w.shape[1]))],
              [Node("Gemm", "head", ["features", "W", "B"], ["logits"])], {"W": w, "B": b})
    return Model(g.check(), num_threads=threads)


def run_fastcnn(path, x, y, classes, epochs, batch, threads, k_images, repeats):
    import fastcnn
    model = fastcnn.load(path, num_threads=threads)
    t0 = time.perf_counter()
    tuner = fastcnn.FineTuner(model, num_classes=classes, keep_classes=False, optimizer="adam", lr=1e-3)
    setup = time.perf_counter() - t0
    tuner.trunk.rows(x[:1])  # warm-up, as for torch
    t0 = time.perf_counter()
    feats = tuner.trunk.rows(x[:k_images])  # what fit() does first: the cached trunk features
    per_image = (time.perf_counter() - t0) / k_images
    feats = tile_rows(feats, len(y))
    head_model = head_only_model(tuner, threads)

    def train(n_epochs=epochs, n=len(y)):
        t = fastcnn.FineTuner(head_model, num_classes=classes, keep_classes=False, optimizer="adam", lr=1e-3)
        t.fit(feats[:n], y[:n], epochs=n_epochs, batch_size=batch, progress=False)

    train(1, 2 * batch)  # warm-up, as for torch
    head = median_time(train, repeats)
    return {"features": per_image * len(y), "head": head, "setup": setup,
            "head_node": tuner.spec.layers[0].node}


def export(net, path):
    import torch
    torch.onnx.export(net.eval(), torch.zeros(1, 3, 224, 224), path, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      opset_version=17, dynamo=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="resnet18,mobilenetv2")
    ap.add_argument("--feature-images", type=int, default=None,
                    help="time feature extraction on this many images and scale to --images "
                         "(default: all; fastcnn's conv kernels are slow today)")
    ap.add_argument("--repeats", type=int, default=3, help="head-training runs (median)")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        sys.exit("bench/finetune.py needs torch to build ResNet-18/MobileNetV2 (pip install torch)")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    k_max = min(args.images, args.feature_images or args.images)
    x = rng.standard_normal((k_max, 3, 224, 224), dtype=np.float32)  # feature extraction inputs
    y = rng.integers(0, args.classes, args.images)
    builders = torch_models()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            build, width = builders[name]
            net = build().eval()
            path = os.path.join(tmp, f"{name}.onnx")
            export(net, path)
            k = min(args.images, args.feature_images or args.images)
            f = run_fastcnn(path, x, y, args.classes, args.epochs, args.batch_size, args.threads, k, args.repeats)
            t = run_torch(net, width, x, y, args.classes, args.epochs, args.batch_size, args.threads, k, args.repeats)
            for r in (f, t):
                r["total"] = r["features"] + r["head"] + r.get("setup", 0.0)
            rows.append((name, width, f, t))
            print(f"{name}: fastcnn {f}\n{name}: torch   {t}", flush=True)
    work = args.images * args.epochs
    scaled = k_max < args.images
    print(f"\n{args.images} images 224x224, {args.epochs} epochs, head -> {args.classes} classes, "
          f"Adam, batch {args.batch_size}, {args.threads} threads (torch {torch.__version__}); "
          f"head training: median of {args.repeats}"
          + (f"; feature extraction timed on {k_max} images and scaled to {args.images}" if scaled else "")
          + "\n")
    print("| model | stage | fastcnn s | torch s | torch/fastcnn | fastcnn samples*epochs/s | torch samples*epochs/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, width, f, t in rows:
        for stage in ("features", "head", "total"):
            rate_f = work / f[stage] if stage != "features" else args.images / f[stage]
            rate_t = work / t[stage] if stage != "features" else args.images / t[stage]
            unit = "" if stage != "features" else (" (images/s, scaled)" if scaled else " (images/s)")
            print(f"| {name} ({width}->{args.classes}) | {stage}{unit} | {f[stage]:.3f} | {t[stage]:.3f} | "
                  f"{t[stage] / f[stage]:.2f} | {_rate(rate_f)} | {_rate(rate_t)} |")


def _rate(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


if __name__ == "__main__":
    main()
