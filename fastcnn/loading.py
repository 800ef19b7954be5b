"""`load` and `convert`: find the right importer for a file, run the graph passes, build a Model."""
from __future__ import annotations

import os
import warnings

from fastcnn.errors import BatchFixedWarning, FastCNNError, GraphError, ModelFileError

FCNN_MAGIC = b"FCNN\x00\r\n\x1a"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


def detect_format(path: str) -> str:
    """'fcnn', 'onnx', 'h5' or 'keras', from the file's first bytes (then its extension)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a model file") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror or e})") from None
    if head.startswith(FCNN_MAGIC):
        return "fcnn"
    if head.startswith(HDF5_MAGIC):
        return "h5"
    if head.startswith(ZIP_MAGIC):
        return "keras"
    ext = os.path.splitext(path)[1].lower()
    if ext == ".fcnn":
        raise ModelFileError(f"{path}: not a .fcnn file (bad magic bytes {head[:8]!r})")
    if ext in (".h5", ".hdf5", ".keras"):
        raise ModelFileError(f"{path}: not an HDF5/Keras file (bad magic bytes {head[:8]!r})")
    return "onnx"


def read_graph(path, fmt: str | None = None):
    """Import a model file into a Graph (before passes). Returns (graph, resources)."""
    path = os.fspath(path)
    fmt = fmt or detect_format(path)
    if fmt == "fcnn":
        from fastcnn.format import fcnn
        return fcnn.load(path)
    if fmt == "onnx":
        from fastcnn.importers import onnx as onnx_importer
        return onnx_importer.import_file_mapped(path)
    if fmt in ("h5", "keras"):
        import importlib
        try:
            keras_importer = importlib.import_module("fastcnn.importers.keras")
        except ModuleNotFoundError as e:
            if e.name != "fastcnn.importers.keras":
                raise
            raise ModelFileError(f"{path}: a Keras/HDF5 file; this fastcnn has no Keras importer "
                                 f"(convert the model to ONNX)") from None
        return keras_importer.import_file(path), None
    raise ModelFileError(f"{path}: unknown model format {fmt!r}")


def load(path, num_threads=None, *, passes: bool = True, format: str | None = None,
         split_batch: bool = True):
    """Load a model file (.onnx, .fcnn, Keras .h5/.keras) and prepare it for running.

    num_threads: threads for the kernels; None = fastcnn's default (all physical cores).
    passes: run the graph passes (BatchNorm folding, fusion, constant folding). Turn off only to
    inspect or debug a graph as imported.
    split_batch: on several threads, run a batch as one part per thread when the graph computes
    each sample alone, and parts (or a batch) too large for the cache in chunks (`Model`);
    False runs every batch whole, its layers split over the threads.
    """
    graph, resources = read_graph(path, format)
    try:
        graph.check()
        return _with_batch_fallback(graph, lambda g: _model(g, passes, num_threads, split_batch,
                                                            resources))
    except BaseException:
        if resources is not None:
            resources.close()
        raise


def _model(graph, passes: bool, num_threads, split_batch: bool, resources):
    """The Model of a checked, imported graph, after the passes unless `passes` is False."""
    from fastcnn.model import Model
    from fastcnn.passes import PIPELINE_ID, run_pipeline
    # a .fcnn written from the current pipeline's output is optimized already (the passes
    # are idempotent; skipping them saves ~20 ms on ResNet-18); Model checks its structure
    # all the same (a full type inference, or check_structure when shapes are dynamic)
    if passes and graph.passes_applied != PIPELINE_ID:
        graph = run_pipeline(graph)
    return Model(graph, num_threads=num_threads, split_batch=split_batch, _resources=resources)


def _batch_one(graph):
    """A copy of `graph` whose inputs with a dynamic first dimension (the batch) have it fixed
    to 1, or None when no input has one."""
    if not any(t.shape and t.shape[0] is None for t in graph.inputs):
        return None
    g = graph.copy()
    for t in g.inputs:   # the copy's own TensorSpecs
        if t.shape and t.shape[0] is None:
            t.shape = (1,) + tuple(t.shape[1:])
    return g


def _with_batch_fallback(graph, make):
    """make(graph); where that raises a GraphError and the graph declares a dynamic batch,
    make(graph with the batch fixed to 1) if that works, with a BatchFixedWarning.

    Exporters often declare a dynamic batch over a graph that only runs at the batch it was
    traced with (a Reshape to [1, -1], a constant of the traced batch's shape). Loading checks
    a dynamic batch at 1 and at 2 (the output shapes, the passes' rewrites), so such a graph
    was refused for a batch the user never asked for; onnxruntime loads it and fails only
    when run at another batch. A graph that does not run at batch 1 either keeps its error."""
    try:
        return make(graph)
    except GraphError as e:
        fixed = _batch_one(graph)
        if fixed is None:
            raise
        try:
            result = make(fixed)
        except FastCNNError:
            raise e from None
        where = graph.where()
        names = [f"'{t.name}'" for t in graph.inputs if t.shape and t.shape[0] is None]
        inputs = f"input {names[0]} declares" if len(names) == 1 else f"inputs {', '.join(names)} declare"
        reason = str(e).removeprefix(f"{where}: ")
        warnings.warn(f"{where}: {inputs} a dynamic batch, but the graph does not "
                      f"run at every batch ({reason}); the batch is fixed to 1 (run larger "
                      f"batches one sample at a time)", BatchFixedWarning, stacklevel=3)
        return result


def convert(src, dst, *, passes: bool = True, metadata: dict | None = None) -> None:
    """Read any supported model file `src` and write it as a .fcnn file `dst`.

    metadata: extra entries merged into the file's metadata (e.g. {"labels": [...]}).
    """
    from fastcnn.format import fcnn
    from fastcnn.passes import run_pipeline
    from fastcnn.passes.analysis import specimens_or_none

    def optimized(g):
        if passes:
            g = run_pipeline(g)
        # a file that would not load is refused here, not written: the passes infer types only
        # when they have something to change, so this is the graph's check
        specimens_or_none(g)
        return g

    graph, resources = read_graph(src)
    try:
        graph.check()
        graph = _with_batch_fallback(graph, optimized)
        if metadata:
            graph.metadata.update(metadata)
        fcnn.save(graph, os.fspath(dst))
    finally:
        if resources is not None:
            resources.close()
