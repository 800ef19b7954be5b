"""Keras built-in activations (the `activation=` string of a layer, and the Activation layer).

Each entry builds IR nodes for one activation name. Keras 2 and Keras 3 differ on one name:
hard_sigmoid is clip(0.2*x + 0.5, 0, 1) in Keras 2 and relu6(x + 3) / 6 in Keras 3, so the
table is chosen by the Keras version that wrote the file. Softmax-like activations act on the
last Keras axis, wherever that axis lives in the IR tensor.
"""
from __future__ import annotations

from fastcnn.importers.keras.builder import Builder, KTensor


def _op(op, **attrs):
    def build(b: Builder, t: KTensor, base: str) -> KTensor:
        return b.unary(op, t, base, attrs)
    return build


def _softmax(op):
    def build(b: Builder, t: KTensor, base: str) -> KTensor:
        return b.unary(op, t, base, {"axis": t.ir_axis(-1)})
    return build


def _swish(b: Builder, t: KTensor, base: str) -> KTensor:
    # x * sigmoid(x); a pass fuses the pair into Swish where that op exists
    s = b.emit("Sigmoid", [t.value], f"{base}/sigmoid")
    return KTensor(b.emit("Mul", [t.value, s], base), t.shape, t.perm)


def _tanh_shrink(b: Builder, t: KTensor, base: str) -> KTensor:
    th = b.emit("Tanh", [t.value], f"{base}/tanh")
    return KTensor(b.emit("Sub", [t.value, th], base), t.shape, t.perm)


def _log_sigmoid(b: Builder, t: KTensor, base: str) -> KTensor:
    # log(sigmoid(x)) = -softplus(-x)
    n = b.emit("Neg", [t.value], f"{base}/neg")
    sp = b.emit("Softplus", [n], f"{base}/softplus")
    return KTensor(b.emit("Neg", [sp], base), t.shape, t.perm)


def _gelu(b: Builder, t: KTensor, base: str, approximate: bool = False) -> KTensor:
    return b.unary("Gelu", t, base, {"approximate": "tanh" if approximate else "none"})


COMMON = {
    "relu": _op("Relu"),
    "relu6": _op("Clip", min=0.0, max=6.0),
    "leaky_relu": _op("LeakyRelu", alpha=0.2),      # Keras 3 keras.activations.leaky_relu default
    "elu": _op("Elu", alpha=1.0),
    "selu": _op("Selu"),
    "celu": _op("Celu", alpha=1.0),
    "gelu": _gelu,
    "sigmoid": _op("Sigmoid"),
    "tanh": _op("Tanh"),
    "softplus": _op("Softplus"),
    "softsign": _op("Softsign"),
    "exponential": _op("Exp"),
    "swish": _swish,
    "silu": _swish,
    "hard_swish": _op("HardSwish"),
    "hard_silu": _op("HardSwish"),
    "hard_tanh": _op("Clip", min=-1.0, max=1.0),
    "mish": _op("Mish"),
    "softmax": _softmax("Softmax"),
    "log_softmax": _softmax("LogSoftmax"),
    "tanh_shrink": _tanh_shrink,
    "log_sigmoid": _log_sigmoid,
}
KERAS2 = {**COMMON, "hard_sigmoid": _op("HardSigmoid", alpha=0.2, beta=0.5)}
KERAS3 = {**COMMON, "hard_sigmoid": _op("HardSigmoid", alpha=1.0 / 6.0, beta=0.5)}
# Activation functions registered by Keras libraries whose meaning is fixed and known: KerasHub
# (formerly KerasNLP) registers gelu_approximate = gelu(x, approximate=True) for its models.
REGISTERED = {"keras_hub>gelu_approximate": ("gelu", {"approximate": True}),
              "keras_nlp>gelu_approximate": ("gelu", {"approximate": True})}
# Modules a serialized built-in activation function may come from.
ACTIVATION_MODULES = ("keras.activations", "keras.src.activations.activations", "keras.src.activations",
                      "tensorflow.keras.activations", "tf_keras.activations")


def activation_name(layer, spec):
    """(name, kwargs) of an activation given in a config: a string, or a serialized built-in
    function {"class_name": "function", "config": "relu", "module": "keras.activations"}.
    Anything else (a custom function, a lambda with stored code) is refused, never executed."""
    if spec is None:
        return "linear", {}
    if isinstance(spec, str):
        return REGISTERED.get(spec, (spec, {}))
    if isinstance(spec, dict):
        if spec.get("registered_name") in REGISTERED and spec.get("class_name") == "function":
            name, kwargs = REGISTERED[spec["registered_name"]]
            return name, dict(kwargs)
        cls = spec.get("class_name")
        module = spec.get("module")
        cfg = spec.get("config")
        if cls == "function" and (module is None or module in ACTIVATION_MODULES) and isinstance(cfg, str):
            return cfg, {}
        if cls == "function" and isinstance(cfg, dict) and isinstance(cfg.get("name"), str) \
                and (module is None or module in ACTIVATION_MODULES):
            kwargs = {k: v for k, v in cfg.items() if k != "name"}
            return cfg["name"], kwargs
        if cls in ("__lambda__", "__function__") or (cls == "function" and module not in ACTIVATION_MODULES):
            layer.refuse(f"the activation is a custom Python function ({str(cfg)[:60]!r}); fastcnn "
                         f"never runs code stored in a model file: use a built-in activation")
    layer.refuse(f"activation {str(spec)[:80]!r} is not a built-in Keras activation")


def apply_activation(layer, t: KTensor, spec, base: str) -> KTensor:
    """Emit the activation `spec` on t (identity for linear/None)."""
    name, kwargs = activation_name(layer, spec)
    if name == "linear":
        return t
    table = KERAS3 if layer.imp.keras3 else KERAS2
    fn = table.get(name)
    if fn is None:
        layer.refuse(f"activation {name!r} is not supported (supported: linear, "
                     f"{', '.join(sorted(table))})")
    if name == "gelu":
        approx = kwargs.pop("approximate", False)
        if kwargs or not isinstance(approx, bool):
            layer.refuse(f"gelu arguments {kwargs or approx!r} are not supported")
        return fn(layer.b, t, base, approx)
    if kwargs:
        layer.refuse(f"arguments {kwargs!r:.80} of activation {name!r} are not supported")
    return fn(layer.b, t, base)
