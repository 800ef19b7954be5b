"""The benchmark model zoo: ONNX files built with `onnx.helper` (no torch), seeded random weights.

    python bench/zoo.py                 # build (or reuse) every model, print a summary
    python bench/zoo.py resnet18        # one model
    zoo.ensure("mobilenetv2") -> path   # from other scripts

Models (NCHW float32 input named "input" with a dynamic batch dimension "N", opset 17):

    lenet5       1x28x28   conv5x5 pad2 ->6, maxpool, conv5x5 ->16, maxpool, dense 120, 84, 10
    edge_cnn     3x32x32   3 x (conv3x3 + bias, BN, ReLU, maxpool2) with 32/64/128 channels,
                           global average pool, dense 10
    resnet18     3x224x224 torchvision topology (7x7 s2 conv, BN, ReLU, maxpool, 4 stages of 2
                           BasicBlocks, 1x1 downsample convs, GAP, Flatten, Gemm 1000)
    mobilenetv2  3x224x224 torchvision topology, width 1.0, ReLU6 as Clip(0, 6), inverted residuals
    efficientnet_b0
                 3x224x224 torchvision topology: inverted residuals with 3x3 and 5x5 depthwise
                           convs, squeeze-and-excitation, SiLU (x * Sigmoid(x)) throughout; not
                           in #3's table (the models SiLU networks stand for: EfficientNet, YOLO)

Conv and BatchNormalization are separate nodes, as a PyTorch eval-mode export without fusion writes
them, so fastcnn's BN folding has work to do. Weights are He-scaled (std sqrt(2/fan_in)); every BN
has random statistics (running mean, variance, scale, bias). The running variance is drawn around
the variance the preceding conv produces on unit-scale input, so activations stay in a sane range
through deep nets instead of exploding or vanishing; `python bench/zoo.py --stats` prints the spread
of every model's output to check that.

Files are written to bench/zoo/<name>.onnx (gitignored). Each has a sidecar <name>.onnx.hash holding
a hash of this file's source and the model name: a file whose hash matches is reused, anything else
is rebuilt, so editing a builder invalidates its cached model.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys

import numpy as np

ZOO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo")
OPSET = 17
IR_VERSION = 8  # onnxruntime 1.1x+ reads it; newer onnx writes a higher default
INPUT_NAME = "input"
OUTPUT_NAME = "output"


class GraphBuilder:
    """Collects ONNX nodes and initializers with unique names; draws weights from one seeded RNG."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.initializers = []
        self.counts = {}

    def name(self, base: str) -> str:
        """A tensor/node name from `base`, suffixed _1, _2 ... when taken."""
        k = self.counts.get(base, 0)
        self.counts[base] = k + 1
        return f"{base}_{k}" if k else base

    def const(self, base: str, value: np.ndarray) -> str:
        """Add an initializer; returns its name."""
        from onnx import numpy_helper
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs, base: str, **attrs) -> str:
        """Add a one-output node named like its output; returns the output name."""
        from onnx import helper
        name = self.name(base)
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name

    # -------------------------------------------------------------- layers
    def conv(self, x, c_in, c_out, k, stride=1, pad=0, group=1, bias=False, base="conv"):
        """Conv with He-scaled weights (c_out, c_in/group, k, k) and an optional bias (c_out,)."""
        fan_in = (c_in // group) * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (c_out, c_in // group, k, k)).astype(np.float32)
        inputs = [x, self.const(f"{base}.weight", w)]
        if bias:
            inputs.append(self.const(f"{base}.bias", self.rng.uniform(-0.1, 0.1, c_out).astype(np.float32)))
        return self.node("Conv", inputs, base, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pad] * 4, group=group, dilations=[1, 1])

    def batchnorm(self, x, c, base="bn", expected_var=2.0, scale=(0.5, 1.5)):
        """BatchNormalization with random statistics. `expected_var`: roughly the variance of the
        incoming activations (a He-scaled conv on unit-scale ReLU input gives about 1-2), so that
        normalising keeps the activations near unit scale; mean and variance are perturbed
        per channel so the folded scale and shift are non-trivial."""
        r = self.rng
        gamma = r.uniform(*scale, c).astype(np.float32)
        beta = r.uniform(-0.2, 0.2, c).astype(np.float32)
        mean = r.normal(0.0, 0.2, c).astype(np.float32)
        var = (expected_var * r.uniform(0.5, 1.5, c)).astype(np.float32)
        return self.node("BatchNormalization",
                         [x, self.const(f"{base}.weight", gamma), self.const(f"{base}.bias", beta),
                          self.const(f"{base}.running_mean", mean), self.const(f"{base}.running_var", var)],
                         base, epsilon=1e-5, momentum=0.9)

    def relu(self, x, base="relu"):
        """Relu node on x."""
        return self.node("Relu", [x], base)

    def relu6(self, x, base="relu6"):
        """ReLU6 as PyTorch exports it at opset 11+: Clip with constant min/max inputs."""
        lo = self.const(f"{base}.min", np.array(0.0, np.float32))
        hi = self.const(f"{base}.max", np.array(6.0, np.float32))
        return self.node("Clip", [x, lo, hi], base)

    def silu(self, x, base="silu"):
        """SiLU as PyTorch exports it: x * Sigmoid(x)."""
        return self.node("Mul", [x, self.node("Sigmoid", [x], f"{base}.sigmoid")], base)

    def squeeze_excite(self, x, c, squeeze, base="se"):
        """torchvision's SqueezeExcitation with SiLU: x * sigmoid(fc2(silu(fc1(gap(x))))), the
        fully connected layers as 1x1 convs with bias on the (N, c, 1, 1) pooled map."""
        s = self.node("GlobalAveragePool", [x], f"{base}.avgpool")
        s = self.silu(self.conv(s, c, squeeze, 1, bias=True, base=f"{base}.fc1"), f"{base}.act")
        s = self.node("Sigmoid", [self.conv(s, squeeze, c, 1, bias=True, base=f"{base}.fc2")],
                      f"{base}.scale")
        return self.node("Mul", [x, s], f"{base}.mul")

    def inverted_residual(self, x, c_in, c_out, expand, k, stride, p, act, squeeze=None):
        """torchvision's inverted residual block named p: [1x1 expand to c_in*expand, BN, act],
        k x k depthwise conv (stride, pad k//2), BN, act, [squeeze-and-excitation to `squeeze`
        channels], 1x1 project to c_out, BN, and the residual Add when the shapes allow it.
        act(x, name) -> the activated tensor."""
        hidden = c_in * expand
        y = x
        if expand != 1:
            y = self.conv(y, c_in, hidden, 1, base=f"{p}.expand")
            y = act(self.batchnorm(y, hidden, base=f"{p}.expand_bn"), f"{p}.expand_act")
        y = self.conv(y, hidden, hidden, k, stride=stride, pad=k // 2, group=hidden, base=f"{p}.dw")
        y = act(self.batchnorm(y, hidden, base=f"{p}.dw_bn"), f"{p}.dw_act")
        if squeeze is not None:
            y = self.squeeze_excite(y, hidden, squeeze, base=f"{p}.se")
        y = self.conv(y, hidden, c_out, 1, base=f"{p}.project")
        # The projection has no activation; the residual branch is scaled down as in
        # build_resnet18 so repeated additions keep the variance bounded.
        residual = stride == 1 and c_in == c_out
        y = self.batchnorm(y, c_out, base=f"{p}.project_bn",
                           scale=(0.2, 0.6) if residual else (0.5, 1.5))
        return self.node("Add", [x, y], f"{p}.add") if residual else y

    def maxpool(self, x, k, stride, pad=0, base="maxpool"):
        """MaxPool with a k x k window and symmetric padding."""
        return self.node("MaxPool", [x], base, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)

    def gap_flatten(self, x):
        """Global average pool then Flatten: (N, C, H, W) -> (N, C)."""
        return self.node("Flatten", [self.node("GlobalAveragePool", [x], "gap")], "flatten", axis=1)

    def dense(self, x, n_in, n_out, base="fc"):
        """Gemm with transB=1 (weight (n_out, n_in)), as torch.nn.Linear exports."""
        w = self.rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in)).astype(np.float32)
        b = self.rng.uniform(-0.1, 0.1, n_out).astype(np.float32)
        return self.node("Gemm", [x, self.const(f"{base}.weight", w), self.const(f"{base}.bias", b)],
                         base, alpha=1.0, beta=1.0, transB=1)

    def model(self, name: str, input_chw, output: str, classes: int, doc: str):
        """Wrap the collected nodes into a checked ModelProto: input (N, *input_chw), output
        (N, classes)."""
        import onnx
        from onnx import TensorProto, helper
        out = self.node("Identity", [output], OUTPUT_NAME)
        x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *input_chw])
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", classes])
        graph = helper.make_graph(self.nodes, name, [x], [y], self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="fastcnn-bench-zoo", doc_string=doc)
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model


# ------------------------------------------------------------------------------ the models
def build_lenet5(seed=5):
    """LeNet-5: input (N, 1, 28, 28) -> logits (N, 10)."""
    g = GraphBuilder(seed)
    x = g.relu(g.conv(INPUT_NAME, 1, 6, 5, pad=2, bias=True, base="conv1"))
    x = g.maxpool(x, 2, 2)                                   # 6x14x14
    x = g.relu(g.conv(x, 6, 16, 5, bias=True, base="conv2"))  # 16x10x10
    x = g.maxpool(x, 2, 2)                                   # 16x5x5
    x = g.node("Flatten", [x], "flatten", axis=1)
    x = g.relu(g.dense(x, 400, 120, "fc1"))
    x = g.relu(g.dense(x, 120, 84, "fc2"))
    x = g.dense(x, 84, 10, "fc3")
    return g.model("lenet5", (1, 28, 28), x, 10, "LeNet-5 with ReLU and max pooling")


def build_edge_cnn(seed=32):
    """Small edge CNN: input (N, 3, 32, 32) -> logits (N, 10)."""
    g = GraphBuilder(seed)
    x, c_in = INPUT_NAME, 3
    for i, c in enumerate((32, 64, 128), 1):
        x = g.conv(x, c_in, c, 3, pad=1, bias=True, base=f"block{i}.conv")
        x = g.relu(g.batchnorm(x, c, base=f"block{i}.bn"), base=f"block{i}.relu")
        x = g.maxpool(x, 2, 2, base=f"block{i}.pool")
        c_in = c
    x = g.dense(g.gap_flatten(x), c_in, 10)
    return g.model("edge_cnn", (3, 32, 32), x, 10, "small edge CNN: 3 conv-BN-ReLU-maxpool blocks")


def build_resnet18(seed=18, size=224):
    """size: input height and width (a multiple of 32 keeps every stage's geometry standard;
    the weights do not depend on it, so a small size makes a fast test of the same network)."""
    g = GraphBuilder(seed)
    x = g.conv(INPUT_NAME, 3, 64, 7, stride=2, pad=3, base="conv1")
    x = g.relu(g.batchnorm(x, 64, base="bn1"))
    x = g.maxpool(x, 3, 2, pad=1)
    c_in = 64
    for stage, (c, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), 1):
        for block in range(2):
            s = stride if block == 0 else 1
            p = f"layer{stage}.{block}"
            y = g.conv(x, c_in, c, 3, stride=s, pad=1, base=f"{p}.conv1")
            y = g.relu(g.batchnorm(y, c, base=f"{p}.bn1"))
            y = g.conv(y, c, c, 3, pad=1, base=f"{p}.conv2")
            # A small scale on the block's last BN (as zero-init-residual training tends to
            # leave it) keeps the residual sum from doubling its variance in every block.
            y = g.batchnorm(y, c, base=f"{p}.bn2", scale=(0.2, 0.6))
            if s != 1 or c_in != c:
                x = g.conv(x, c_in, c, 1, stride=s, base=f"{p}.downsample.0")
                x = g.batchnorm(x, c, base=f"{p}.downsample.1")
            x = g.relu(g.node("Add", [y, x], f"{p}.add"))
            c_in = c
    x = g.dense(g.gap_flatten(x), 512, 1000)
    return g.model("resnet18", (3, size, size), x, 1000, "ResNet-18 (torchvision topology)")


MOBILENETV2_TABLE = (  # expansion t, output channels c, repeats n, first stride s
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def build_mobilenetv2(seed=2, size=224):
    """size: input height and width, as in build_resnet18."""
    g = GraphBuilder(seed)
    x = g.conv(INPUT_NAME, 3, 32, 3, stride=2, pad=1, base="features.0.0")
    x = g.relu6(g.batchnorm(x, 32, base="features.0.1"))
    c_in, index = 32, 1
    for t, c, n, s in MOBILENETV2_TABLE:
        for i in range(n):
            x = g.inverted_residual(x, c_in, c, t, 3, s if i == 0 else 1, f"features.{index}",
                                    lambda y, name: g.relu6(y))
            c_in, index = c, index + 1
    x = g.conv(x, c_in, 1280, 1, base=f"features.{index}.0")
    x = g.relu6(g.batchnorm(x, 1280, base=f"features.{index}.1"))
    x = g.dense(g.gap_flatten(x), 1280, 1000, "classifier.1")
    return g.model("mobilenetv2", (3, size, size), x, 1000, "MobileNetV2 width 1.0 (torchvision topology)")


# (expand ratio, kernel, stride, output channels, blocks) per stage
EFFICIENTNET_B0_TABLE = (
    (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1),
)


def build_efficientnet_b0(seed=7, size=224):
    """size: input height and width, as in build_resnet18."""
    g = GraphBuilder(seed)
    x = g.conv(INPUT_NAME, 3, 32, 3, stride=2, pad=1, base="features.0.0")
    x = g.silu(g.batchnorm(x, 32, base="features.0.1"), "features.0.2")
    c_in, index = 32, 1
    for t, k, s, c, n in EFFICIENTNET_B0_TABLE:
        for i in range(n):
            x = g.inverted_residual(x, c_in, c, t, k, s if i == 0 else 1, f"features.{index}",
                                    g.silu, squeeze=max(1, c_in // 4))
            c_in, index = c, index + 1
    x = g.conv(x, c_in, 1280, 1, base=f"features.{index}.0")
    x = g.silu(g.batchnorm(x, 1280, base=f"features.{index}.1"), f"features.{index}.2")
    x = g.dense(g.gap_flatten(x), 1280, 1000, "classifier.1")
    return g.model("efficientnet_b0", (3, size, size), x, 1000,
                   "EfficientNet-B0 (torchvision topology): SiLU as Sigmoid * x, squeeze-and-excitation")


# name -> (builder, input shape without batch)
MODELS = {
    "lenet5": (build_lenet5, (1, 28, 28)),
    "edge_cnn": (build_edge_cnn, (3, 32, 32)),
    "resnet18": (build_resnet18, (3, 224, 224)),
    "mobilenetv2": (build_mobilenetv2, (3, 224, 224)),
    "efficientnet_b0": (build_efficientnet_b0, (3, 224, 224)),
}


RESIZABLE = ("resnet18", "mobilenetv2", "efficientnet_b0")  # builders taking `size` (global pooling before the head)


def build(name: str, size: int | None = None):
    """The ModelProto of a zoo model; `size` (the RESIZABLE models only) overrides the input
    height and width."""
    builder = MODELS[name][0]
    if size is None:
        return builder()
    if name not in RESIZABLE:
        raise ValueError(f"{name} has a fixed input size {MODELS[name][1]}")
    return builder(size=size)


def input_shape(name: str, batch: int, size: int | None = None) -> tuple:
    """(batch, C, H, W) for a zoo model (with H = W = size when given)."""
    c, h, w = MODELS[name][1]
    return (batch, c, h, w) if size is None else (batch, c, size, size)


def sample_input(name: str, batch: int, seed: int = 0, size: int | None = None) -> np.ndarray:
    """A seeded standard-normal input (like a normalised image batch), C-contiguous float32."""
    return np.random.default_rng(seed).standard_normal(input_shape(name, batch, size), dtype=np.float32)


def builder_hash(name: str) -> str:
    """Hash of this file's source and the model name: changes whenever a builder changes."""
    with open(os.path.abspath(__file__), "rb") as f:
        src = f.read()
    return hashlib.sha256(src + b"\0" + name.encode()).hexdigest()[:16]


def path_of(name: str, zoo_dir: str = ZOO_DIR) -> str:
    """Where the model's .onnx file lives (built or not)."""
    return os.path.join(zoo_dir, f"{name}.onnx")


def ensure(name: str, zoo_dir: str = ZOO_DIR, force: bool = False) -> str:
    """Path of the model's .onnx file, building it first if missing or built by other code."""
    import onnx
    if name not in MODELS:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(MODELS)}")
    path = path_of(name, zoo_dir)
    stamp = path + ".hash"
    want = builder_hash(name)
    if not force and os.path.exists(path) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read().strip() == want:
                return path
    os.makedirs(zoo_dir, exist_ok=True)
    model = build(name)
    tmp = path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)
    with open(stamp + ".tmp", "w") as f:
        f.write(want + "\n")
    os.replace(stamp + ".tmp", stamp)
    return path


def output_stats(path: str, name: str, batch: int = 2) -> str:
    """One line on the spread of the model's output under onnxruntime (a sanity check that the
    random weights keep activations in range)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = sess.run(None, {INPUT_NAME: sample_input(name, batch)})[0]
    return (f"output {list(y.shape)}: std {y.std():.3g}, max|y| {np.abs(y).max():.3g}, "
            f"finite {bool(np.isfinite(y).all())}")


def main(argv=None):
    """Command line: build (or reuse) models and print a line per model."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=list(MODELS), help=f"subset of {', '.join(MODELS)}")
    ap.add_argument("--force", action="store_true", help="rebuild even if a matching file exists")
    ap.add_argument("--stats", action="store_true", help="run each model in onnxruntime and "
                                                         "print its output spread")
    ap.add_argument("--dir", default=ZOO_DIR, help="output folder (default bench/zoo)")
    args = ap.parse_args(argv)
    for name in args.models:
        if name not in MODELS:
            ap.error(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        path = ensure(name, args.dir, args.force)
        line = f"{name:12s} {path} ({os.path.getsize(path) / 1e6:.1f} MB)"
        if args.stats:
            line += "  " + output_stats(path, name)
        print(line)


if __name__ == "__main__":
    sys.exit(main())
