"""`load` and `convert`: find the right importer for a file, run the graph passes, build a Model."""
from __future__ import annotations

import os

from fastcnn.errors import ModelFileError

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
    from fastcnn.model import Model
    from fastcnn.passes import PIPELINE_ID, run_pipeline

    graph, resources = read_graph(path, format)
    try:
        graph.check()
        # a .fcnn written from the current pipeline's output is optimized already (the passes
        # are idempotent; skipping them saves ~20 ms on ResNet-18); Model checks its structure
        # all the same (a full type inference, or check_structure when shapes are dynamic)
        if passes and graph.passes_applied != PIPELINE_ID:
            graph = run_pipeline(graph)
        return Model(graph, num_threads=num_threads, split_batch=split_batch,
                     _resources=resources)
    except BaseException:
        if resources is not None:
            resources.close()
        raise


def convert(src, dst, *, passes: bool = True, metadata: dict | None = None) -> None:
    """Read any supported model file `src` and write it as a .fcnn file `dst`.

    metadata: extra entries merged into the file's metadata (e.g. {"labels": [...]}).
    """
    from fastcnn.format import fcnn
    from fastcnn.passes import run_pipeline
    from fastcnn.passes.analysis import specimens_or_none

    graph, resources = read_graph(src)
    try:
        graph.check()
        if passes:
            graph = run_pipeline(graph)
        # a file that would not load is refused here, not written: the passes infer types only
        # when they have something to change, so this is the graph's check
        specimens_or_none(graph)
        if metadata:
            graph.metadata.update(metadata)
        fcnn.save(graph, os.fspath(dst))
    finally:
        if resources is not None:
            resources.close()
