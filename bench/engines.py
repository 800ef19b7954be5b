"""The other engines run.py times beside fastcnn and onnxruntime, when they are installed.

    openvino   OpenVINO's CPU plugin reading the .onnx file itself (`pip install openvino`),
               compiled for each input shape it is called with (a static batch, as an OpenVINO
               user reshapes a model), LATENCY hint, one stream, f32 inference precision.
    ncnn       Tencent's ncnn (`pip install ncnn pnnx`): the .onnx file converted once with
               pnnx (ncnn's converter, `fp16=0`: float32 weights) into `bench/zoo/ncnn/`, run
               with fp16/bf16 storage and arithmetic off; it takes one image per extractor, so a
               batch is a loop over its images, as ncnn users run one.
    torch      PyTorch eager (`pip install torch`, the CPU build): the zoo's ONNX graph as a
               torch.fx GraphModule of torch.nn modules (`torch_module`), Conv-BatchNorm pairs
               fused by torch.fx.experimental.optimization.fuse, called under
               torch.inference_mode(). onnx2torch would do the conversion but needs torchvision;
               the zoo uses thirteen ONNX ops, so the mapping is written here.

Every engine: `missing(name)` (None, or why it cannot run here), `version(name)`, and
`open_engine(name, path, threads, shape)` -> a Runner: call it with a float32 NCHW array to get
the model's first output as a new numpy array; `close()` frees it. Opening prepares the engine for
`shape` (what "load time" measures); other shapes are prepared at their first call (a warm-up
call in run.py). run.py checks their outputs against onnxruntime's as it checks fastcnn's, and
flags a row where an engine computes something else.
"""
from __future__ import annotations

import hashlib
import importlib.util
import operator
import os
import subprocess

import numpy as np

OTHER_ENGINES = ("openvino", "ncnn", "torch")
NCNN_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo", "ncnn")


class UnsupportedModel(Exception):
    """The engine cannot run this model here (an op the torch mapping lacks, a file pnnx cannot
    convert)."""


def missing(name: str):
    """None when engine `name` can run here, else the reason (a module is not installed)."""
    for module in {"openvino": ["openvino"], "ncnn": ["ncnn", "pnnx"], "torch": ["torch"]}[name]:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


def version(name: str) -> str:
    """'openvino 2026.4.1', 'ncnn 1.0.20261020', 'torch 2.13.0+cpu'."""
    if name == "openvino":
        import openvino
        return f"openvino {openvino.__version__.split('-')[0]}"
    if name == "ncnn":
        import ncnn
        return f"ncnn {ncnn.__version__}"
    import torch
    return f"torch {torch.__version__}"


def open_engine(name: str, path: str, threads: int, shape):
    """A Runner for engine `name` on the ONNX file `path` with `threads` threads, prepared for
    an input of `shape` (the model's only input, float32 NCHW)."""
    if name == "openvino":
        return OpenVinoRunner(path, threads, tuple(shape))
    if name == "ncnn":
        return NcnnRunner(path, threads, tuple(shape))
    if name == "torch":
        return TorchRunner(path, threads)
    raise ValueError(f"unknown engine {name!r}; the others are {', '.join(OTHER_ENGINES)}")


# ----------------------------------------------------------------------------- OpenVINO
class OpenVinoRunner:
    """OpenVINO: one compiled model and infer request per input shape."""

    def __init__(self, path: str, threads: int, shape: tuple):
        import openvino as ov
        self._core = ov.Core()
        self._model = self._core.read_model(path)
        if len(self._model.inputs) != 1:
            raise UnsupportedModel(f"{path}: {len(self._model.inputs)} inputs; the bench feeds one")
        self._config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                        "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
        self._requests = {}
        self._request(shape)

    def _request(self, shape: tuple):
        req = self._requests.get(shape)
        if req is None:
            model = self._model.clone()
            model.reshape({model.inputs[0].any_name: list(shape)})
            compiled = self._core.compile_model(model, "CPU", self._config)
            req = self._requests[shape] = compiled.create_infer_request()
        return req

    def __call__(self, x: np.ndarray) -> np.ndarray:
        req = self._request(x.shape)
        req.infer({0: x})
        return np.array(req.get_output_tensor(0).data, copy=True)

    def close(self):
        self._requests.clear()


# ----------------------------------------------------------------------------- ncnn
def ncnn_files(path: str, shape: tuple, cache: str | None = None):
    """(param, bin) paths of the ncnn model converted from the ONNX file `path` for an input of
    `shape` (batch 1), converting with pnnx unless the cache holds it (keyed by the file's bytes
    and the shape). Raises UnsupportedModel when pnnx fails."""
    import pnnx
    with open(path, "rb") as f:
        key = hashlib.sha256(f.read() + repr(tuple(shape[1:])).encode()).hexdigest()[:16]
    folder = os.path.join(cache or NCNN_CACHE, key)
    param, weights = os.path.join(folder, "model.ncnn.param"), os.path.join(folder, "model.ncnn.bin")
    if os.path.exists(param) and os.path.exists(weights):
        return param, weights
    os.makedirs(folder, exist_ok=True)
    src = os.path.join(folder, "model.onnx")
    with open(path, "rb") as f, open(src, "wb") as g:
        g.write(f.read())
    # fp16=0: pnnx stores fp16 weights by default (a 2e-3 difference on LeNet-5)
    cmd = [pnnx.EXEC_PATH, src, f"inputshape=[{','.join(map(str, (1,) + tuple(shape[1:])))}]", "fp16=0"]
    out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=600)
    if out.returncode != 0 or not (os.path.exists(param) and os.path.exists(weights)):
        raise UnsupportedModel(f"{path}: pnnx failed ({out.returncode}): {out.stderr[-500:]}")
    return param, weights


class NcnnRunner:
    """ncnn on the pnnx conversion of the file: one extractor per image."""

    def __init__(self, path: str, threads: int, shape: tuple):
        import ncnn
        self._ncnn = ncnn
        param, weights = ncnn_files(path, shape)
        net = self._net = ncnn.Net()
        opt = net.opt
        opt.num_threads = threads
        # float32 throughout, as every engine here (ncnn picks fp16/bf16 where the CPU has them)
        opt.use_fp16_packed = opt.use_fp16_storage = opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = False
        if net.load_param(param) or net.load_model(weights):
            raise UnsupportedModel(f"{path}: ncnn cannot load pnnx's conversion")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        ncnn, net = self._ncnn, self._net
        outs = []
        for image in x:
            with net.create_extractor() as ex:
                ex.input("in0", ncnn.Mat(np.ascontiguousarray(image)))
                _, out = ex.extract("out0")
                outs.append(np.array(out))
        return np.stack(outs)

    def close(self):
        if self._net is not None:
            self._net.clear()
            self._net = None


# ----------------------------------------------------------------------------- torch
class TorchRunner:
    """PyTorch eager on the GraphModule of `torch_module`. torch's thread count is per process:
    each call sets it when another runner changed it."""

    def __init__(self, path: str, threads: int):
        import torch
        self._torch = torch
        self._threads = threads
        torch.set_num_threads(threads)
        self._module = torch_module(path)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        if torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)
        with torch.inference_mode():
            return self._module(torch.from_numpy(x)).numpy()

    def close(self):
        self._module = None


def _attrs(node) -> dict:
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _symmetric_pads(node, attrs, rank=2):
    pads = list(attrs.get("pads", [0] * (2 * rank)))
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or pads[:rank] != pads[rank:]:
        raise UnsupportedModel(f"node '{node.name}' ({node.op_type}): auto_pad or asymmetric "
                               f"pads {pads}")
    return tuple(pads[:rank])


def torch_module(path: str):
    """The ONNX graph of `path` (one float32 NCHW input, the ops of the bench zoo: Conv,
    BatchNormalization, Relu, Clip, Sigmoid, MaxPool, AveragePool, GlobalAveragePool, Add, Mul,
    Flatten, Gemm, Identity; x * Sigmoid(x) becomes nn.SiLU) as a torch.fx.GraphModule in eval
    mode, Conv-BatchNorm pairs fused. Raises UnsupportedModel for anything else."""
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import fx, nn
    from torch.fx.experimental.optimization import fuse

    model = onnx.load(path)
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:   # Constant nodes (none in the zoo) become initializers
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise UnsupportedModel(f"{path}: {len(inputs)} inputs; the bench feeds one")

    def param(name):
        return torch.from_numpy(np.array(consts[name], dtype=np.float32))

    graph = fx.Graph()
    modules = nn.Module()
    values = {inputs[0].name: graph.placeholder("x")}
    sigmoid_of = {}   # output of a Sigmoid node -> its input
    for k, node in enumerate(g.node):
        op, a = node.op_type, _attrs(node)
        if op == "Constant":
            continue
        x = values.get(node.input[0]) if node.input else None
        if x is None and op not in ("Add",):
            raise UnsupportedModel(f"node '{node.name}' ({op}): input '{node.input[0]}' is not "
                                   f"computed at run time")
        mod = None
        if op == "Conv":
            w = consts[node.input[1]]
            if w.ndim != 4:
                raise UnsupportedModel(f"node '{node.name}' (Conv): {w.ndim - 2}-D")
            groups = a.get("group", 1)
            mod = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]),
                            stride=tuple(a.get("strides", (1, 1))),
                            padding=_symmetric_pads(node, a),
                            dilation=tuple(a.get("dilations", (1, 1))), groups=groups,
                            bias=len(node.input) > 2 and bool(node.input[2]))
            mod.weight.data = param(node.input[1])
            if mod.bias is not None:
                mod.bias.data = param(node.input[2])
        elif op == "BatchNormalization":
            scale = param(node.input[1])
            mod = nn.BatchNorm2d(scale.shape[0], eps=a.get("epsilon", 1e-5))
            mod.weight.data, mod.bias.data = scale, param(node.input[2])
            mod.running_mean.data, mod.running_var.data = param(node.input[3]), param(node.input[4])
        elif op == "Relu":
            mod = nn.ReLU()
        elif op == "Clip":
            lo = float(consts[node.input[1]]) if len(node.input) > 1 and node.input[1] else a.get("min", -np.inf)
            hi = float(consts[node.input[2]]) if len(node.input) > 2 and node.input[2] else a.get("max", np.inf)
            mod = nn.ReLU6() if (lo, hi) == (0.0, 6.0) else nn.Hardtanh(lo, hi)
        elif op in ("MaxPool", "AveragePool"):
            kw = dict(kernel_size=tuple(a["kernel_shape"]), stride=tuple(a.get("strides", (1, 1))),
                      padding=_symmetric_pads(node, a), ceil_mode=bool(a.get("ceil_mode", 0)))
            if op == "MaxPool":
                mod = nn.MaxPool2d(dilation=tuple(a.get("dilations", (1, 1))), **kw)
            else:
                mod = nn.AvgPool2d(count_include_pad=bool(a.get("count_include_pad", 0)), **kw)
        elif op == "GlobalAveragePool":
            mod = nn.AdaptiveAvgPool2d(1)
        elif op == "Flatten":
            values[node.output[0]] = graph.call_function(torch.flatten, (x, a.get("axis", 1)))
        elif op == "Identity":
            values[node.output[0]] = x
        elif op == "Sigmoid":
            mod = nn.Sigmoid()
            sigmoid_of[node.output[0]] = node.input[0]
        elif op == "Mul" and len(node.input) == 2 and (
                sigmoid_of.get(node.input[1]) == node.input[0]
                or sigmoid_of.get(node.input[0]) == node.input[1]):
            # x * Sigmoid(x): the SiLU a torch user writes (the Sigmoid left unused is dropped)
            mod = nn.SiLU()
            x = values[node.input[0] if sigmoid_of.get(node.input[1]) == node.input[0]
                       else node.input[1]]
        elif op in ("Add", "Mul"):
            b = [values.get(n) for n in node.input]
            if any(v is None for v in b):
                raise UnsupportedModel(f"node '{node.name}' ({op}): a constant operand")
            values[node.output[0]] = graph.call_function(
                operator.add if op == "Add" else operator.mul, tuple(b))
        elif op == "Gemm":
            if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                raise UnsupportedModel(f"node '{node.name}' (Gemm): transA, alpha or beta")
            w = consts[node.input[1]]
            w = w if a.get("transB", 0) else w.T
            mod = nn.Linear(w.shape[1], w.shape[0], bias=len(node.input) > 2)
            mod.weight.data = torch.from_numpy(np.array(w, dtype=np.float32, order="C"))
            if mod.bias is not None:
                mod.bias.data = param(node.input[2]).reshape(-1)
        else:
            raise UnsupportedModel(f"node '{node.name}': op {op} is not mapped to torch")
        if mod is not None:
            name = f"m{k}"
            modules.add_module(name, mod)
            values[node.output[0]] = graph.call_module(name, (x,))
    graph.output(values[g.output[0].name])
    # modules nothing reads (the Sigmoids a SiLU replaced; the zoo has no other dead nodes)
    for n in reversed(list(graph.nodes)):
        if n.op == "call_module" and not n.users:
            graph.erase_node(n)
    gm = fx.GraphModule(modules, graph).eval()
    return fuse(gm).eval()
