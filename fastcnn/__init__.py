"""fastcnn: a lightweight CNN inference and last-layer fine-tuning engine.

    model = fastcnn.load("net.onnx")             # or .fcnn, Keras .h5/.keras
    outs = model.run(None, {"input": x})         # like onnxruntime.InferenceSession.run
    model.save("net.fcnn")
"""
# fastcnn.config sets the OpenMP wait policy; it must be imported before any kernel module.
from fastcnn.config import set_memory_limit, set_num_threads
from fastcnn.errors import (BatchFixedWarning, FastCNNError, FineTuneError, GraphError, InputError,
                            ModelFileError, ResourceLimitError, UnsupportedOp, UnsupportedOpError)

__version__ = "0.1.0"

try:
    from fastcnn._kernels import step as _step  # noqa: F401  (compiled extension present?)
except ImportError as _e:  # pragma: no cover - only in an unbuilt source tree
    raise ImportError(
        "fastcnn's compiled kernels are missing: this looks like an unbuilt source tree. "
        "Install with `pip install .` (or build in place with `python setup.py build_ext --inplace`)."
    ) from _e

from fastcnn.loading import convert, load  # noqa: E402
from fastcnn.model import Model  # noqa: E402
from fastcnn.finetune import FineTuner  # noqa: E402


def build_info() -> dict:
    """How the kernels were built and what they will use: compiler, flags, OpenMP, SIMD level,
    default thread count."""
    from fastcnn import config
    from fastcnn._kernels.buildinfo import compiled_info

    info = compiled_info()
    info["version"] = __version__
    info["default_threads"] = config.default_threads()
    info["physical_cores"] = config.physical_cores()
    info["memory_limit"] = config.memory_limit()
    info["openmp_wait"] = config.OPENMP_WAIT
    return info


__all__ = [
    "load", "convert", "Model", "build_info", "set_num_threads", "set_memory_limit",
    "FastCNNError", "ModelFileError", "UnsupportedOpError", "UnsupportedOp", "GraphError",
    "InputError", "ResourceLimitError", "FineTuneError", "BatchFixedWarning", "__version__",
    "FineTuner",
]
