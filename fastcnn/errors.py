"""The exceptions fastcnn raises (every one a `FastCNNError`) and the warnings it gives.

Messages name where the problem is (file, node, tensor) and give the expected and actual values,
so a user can act on them without a debugger.
"""


class FastCNNError(Exception):
    """Base class of every error fastcnn raises on purpose."""


class ModelFileError(FastCNNError, ValueError):
    """A model file is unreadable, truncated, corrupt, of an unknown version, or inconsistent."""


class UnsupportedOpError(FastCNNError, NotImplementedError):
    """The graph uses an operator (or an attribute value) fastcnn cannot run."""


# Short alias used in docs and by the Keras importer ("a clear UnsupportedOp error").
UnsupportedOp = UnsupportedOpError


class GraphError(FastCNNError, ValueError):
    """The graph is well-formed data but invalid: shapes do not fit, an attribute is out of range,
    a tensor is undefined, a cycle, ..."""


class InputError(FastCNNError, ValueError):
    """The arrays given to `Model.run` do not match the model's inputs."""


class ResourceLimitError(FastCNNError, MemoryError):
    """Running (or loading) would need more memory than the configured limit allows."""


class FineTuneError(FastCNNError, ValueError):
    """Fine-tuning cannot proceed (no trainable head found, bad labels, ...)."""


class BatchFixedWarning(UserWarning):
    """A model file declares a dynamic batch that its graph cannot run (it was exported with the
    batch it was traced with baked in): fastcnn loaded it with the batch fixed to 1."""
