"""The .fcnn format: round trips, zero-copy loading, and every way a file can be broken.

Broken files are made by editing a good file's bytes, or by rewriting its JSON header and
recomputing the checksum, so each test reaches the check it is about (not just the CRC).
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import fastcnn
from fastcnn.errors import FastCNNError, GraphError, ModelFileError
from fastcnn.format import fcnn
from fastcnn.ir.graph import Graph, Node, TensorSpec

from helpers import onnx_model, save_onnx
from reference import conv2d

MODELS = Path(__file__).resolve().parents[2] / "models"
SHIPPED_ONNX = MODELS / "lenet5_digits.onnx"
SHIPPED_FCNN = MODELS / "lenet5_digits.fcnn"


# ----------------------------------------------------------------------------- fixtures
def small_cnn_onnx(rng):
    """Conv(3->5, 3x3, pad 1) -> Relu -> MaxPool 2 -> Flatten -> Gemm(5*3*2 -> 4), batch dynamic,
    input (N, 3, 7, 5): odd sizes on purpose."""
    from onnx import helper

    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    inits = {
        "w": rng.standard_normal((5, 3, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(5).astype(np.float32),
        "fw": rng.standard_normal((4, 5 * 3 * 2)).astype(np.float32),
        "fb": rng.standard_normal(4).astype(np.float32),
    }
    return onnx_model(nodes, {"x": [None, 3, 7, 5]}, {"y": [None, 4]}, inits)


@pytest.fixture
def onnx_path(tmp_path):
    pytest.importorskip("onnx")
    return save_onnx(small_cnn_onnx(np.random.default_rng(0)), str(tmp_path))


@pytest.fixture
def fcnn_path(tmp_path, onnx_path):
    """A good .fcnn file with labels and a padding string in its metadata (tests that edit the
    header shrink the padding to make room)."""
    path = str(tmp_path / "model.fcnn")
    fastcnn.convert(onnx_path, path, metadata={"labels": ["a", "b", "c", "d"], "pad": "#" * 400})
    return path


def parts(path):
    """(preamble fields, header dict, whole file bytes)."""
    data = Path(path).read_bytes()
    fields = fcnn.PREAMBLE.unpack_from(data, 0)
    _, _, _, h_off, h_len, _, _ = fields
    return fields, json.loads(data[h_off:h_off + h_len]), data


def with_crc(body: bytes) -> bytes:
    """`body` (everything before the trailer) plus a trailer with its correct CRC."""
    return body + fcnn.TRAILER.pack(fcnn.TRAILER_MAGIC, zlib.crc32(body) & 0xFFFFFFFF, 0)


def rewrite_header(path, mutate=None, raw=None, preamble=None):
    """Rewrite a .fcnn file in place: new header (mutate(dict) or raw bytes), the same data region,
    optionally changed preamble fields, and a valid checksum."""
    (magic, version, flags, h_off, h_len, d_off, d_len), header, data = parts(path)
    if raw is None:
        mutate(header)
        if isinstance(header.get("metadata"), dict):
            header["metadata"].pop("pad", None)
        raw = json.dumps(header, separators=(",", ":")).encode()
    assert 64 + len(raw) <= d_off, "test helper: no room for the edited header"
    raw = raw + b" " * (d_off - 64 - len(raw))  # JSON allows trailing blanks
    fields = dict(magic=magic, version=version, flags=flags, h_off=h_off, h_len=len(raw),
                  d_off=d_off, d_len=d_len)
    fields.update(preamble or {})
    pre = fcnn.PREAMBLE.pack(*fields.values())
    body = pre + raw + data[d_off:len(data) - 16]
    Path(path).write_bytes(with_crc(body))


def feed(rng, n=3):
    return {"x": rng.standard_normal((n, 3, 7, 5)).astype(np.float32)}


# ----------------------------------------------------------------------------- round trips
def test_onnx_to_fcnn_round_trip_is_bit_identical(onnx_path, fcnn_path):
    x = feed(np.random.default_rng(1))
    with fastcnn.load(onnx_path, num_threads=1) as a, fastcnn.load(fcnn_path, num_threads=1) as b:
        ya, yb = a.run(None, x)[0], b.run(None, x)[0]
        assert ya.shape == (3, 4)
        assert np.array_equal(ya, yb)
        assert [(t.name, t.shape) for t in b.inputs] == [("x", (None, 3, 7, 5))]
        assert [(t.name, t.shape) for t in b.outputs] == [("y", (None, 4))]


def test_folded_batchnorm_is_stored_as_the_weights_it_computes_with(tmp_path):
    """Conv -> BatchNormalization from ONNX: in memory the conv keeps the file's weights and a
    weight_scale; the .fcnn file stores the scaled weights once (no weight_scale, not the
    unscaled ones beside them), and runs bit for bit like the .onnx model on 1 and 2 threads."""
    from onnx import helper
    rng = np.random.default_rng(8)
    inits = {"w": rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
             "g": rng.uniform(0.5, 2, 6).astype(np.float32), "b": rng.standard_normal(6).astype(np.float32),
             "m": rng.standard_normal(6).astype(np.float32), "v": rng.uniform(0.2, 2, 6).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    src = save_onnx(onnx_model(nodes, {"x": (None, 3, 12, 10)}, {"y": None}, inits), str(tmp_path))
    dst = tmp_path / "m.fcnn"
    fastcnn.convert(src, dst)
    _, header, _ = parts(dst)
    conv = next(n for n in header["graph"]["nodes"] if n["name"] == "conv")
    assert "weight_scale" not in conv.get("attrs", {})
    weights = [t for t in header["tensors"] if t["shape"] == [6, 3, 3, 3]]
    assert len(weights) == 1
    x = {"x": rng.standard_normal((3, 3, 12, 10)).astype(np.float32)}
    # numpy: the conv, then the BatchNormalization (epsilon 1e-5), then Relu
    f64 = {k: v.astype(np.float64) for k, v in inits.items()}
    c = conv2d(x["x"], inits["w"], None, pads=(1, 1, 1, 1))
    per = lambda v: v.reshape(1, -1, 1, 1)   # noqa: E731
    want = np.maximum((c - per(f64["m"])) / np.sqrt(per(f64["v"]) + 1e-5) * per(f64["g"]) + per(f64["b"]), 0)
    stored = np.frombuffer(parts(dst)[2], np.float32, 6 * 27, weights[0]["offset"])   # absolute
    s = f64["g"] / np.sqrt(f64["v"] + 1e-5)
    assert np.array_equal(stored, (f64["w"] * s[:, None, None, None]).astype(np.float32).reshape(-1))
    for threads in (1, 2):
        with fastcnn.load(src, num_threads=threads) as a, fastcnn.load(dst, num_threads=threads) as b:
            assert len(a.graph.nodes[0].attrs["weight_scale"]) == 6
            ya = a.run(None, x)[0]
            assert np.array_equal(ya, b.run(None, x)[0])
            assert np.abs(ya - want).max() <= 1e-4 + 1e-3 * np.abs(want).max()


def test_model_save_round_trip_and_resave_is_byte_identical(onnx_path, tmp_path):
    x = feed(np.random.default_rng(2), n=5)
    first, second = tmp_path / "one.fcnn", tmp_path / "two.fcnn"
    with fastcnn.load(onnx_path, num_threads=1) as m:
        want = m.run(None, x)[0]
        m.save(first)
    with fastcnn.load(first, num_threads=1) as m:
        assert np.array_equal(m.run(None, x)[0], want)
        m.save(second)
    assert first.read_bytes() == second.read_bytes()


def test_optimized_file_skips_the_passes_and_edited_graphs_do_not(onnx_path, fcnn_path, tmp_path,
                                                                  monkeypatch):
    """convert() records the pipeline it ran; loading such a file checks its structure but does
    not run the passes again. A file naming another pipeline, or none, goes through them; a
    malformed 'passes' value is refused."""
    import fastcnn.passes as passes_mod
    assert parts(fcnn_path)[1]["passes"] == passes_mod.PIPELINE_ID
    x = feed(np.random.default_rng(4))
    with fastcnn.load(onnx_path, num_threads=1) as m:
        want = m.run(None, x)[0]
        assert m.graph.passes_applied == passes_mod.PIPELINE_ID
        assert m.graph.copy().passes_applied is None      # an edited copy is not optimized

    calls = []
    real = passes_mod.run_pipeline
    monkeypatch.setattr(passes_mod, "run_pipeline", lambda g, p=None: calls.append(1) or real(g, p))
    with fastcnn.load(fcnn_path, num_threads=1) as m:
        assert np.array_equal(m.run(None, x)[0], want)
    assert calls == []

    rewrite_header(fcnn_path, lambda h: h.update(passes="fastcnn-passes-0:older"))
    with fastcnn.load(fcnn_path, num_threads=1) as m:
        assert np.array_equal(m.run(None, x)[0], want)
    assert calls == [1]

    rewrite_header(fcnn_path, lambda h: h.update(passes=["not", "a", "string"]))
    with pytest.raises(ModelFileError, match="'passes' must be a string"):
        fastcnn.load(fcnn_path)


@pytest.mark.parametrize("spatial", ["static", "dynamic"])
@pytest.mark.parametrize("edit, error", [
    (lambda conv: conv["attrs"].update(group="1"), "attribute 'group' must be an int"),
    (lambda conv: conv["attrs"].update(strides=[1, True]), "attribute 'strides' must be an int"),
    (lambda conv: conv["attrs"].update(padz=[0, 0]), "unknown attribute"),
    (lambda conv: conv.update(op="Evaluate"), "operator 'Evaluate'"),
    (lambda conv: conv.update(inputs=conv["inputs"] * 3), "has 9 inputs"),
])
def test_optimized_file_with_a_bad_node_is_refused_at_load(fcnn_path, spatial, edit, error):
    """A file that skips the passes is still checked node by node when it loads: by the
    batch-1 type inference when only the batch is dynamic, by the structure check when the
    height and width are too (nothing is inferred until the first run)."""
    import fastcnn.passes as passes_mod

    def mutate(h):
        assert h["passes"] == passes_mod.PIPELINE_ID
        if spatial == "dynamic":
            h["graph"]["inputs"][0]["shape"][2:] = [None, None]
        edit(next(n for n in h["graph"]["nodes"] if n["op"] == "Conv"))
    rewrite_header(fcnn_path, mutate)
    with pytest.raises(FastCNNError, match=error):
        fastcnn.load(fcnn_path)


@pytest.mark.skipif(not SHIPPED_FCNN.exists(), reason="shipped model missing")
def test_shipped_fcnn_matches_shipped_onnx_exactly():
    pytest.importorskip("onnx")
    x = np.load(MODELS / "digits_samples.npz")["x"][:17]
    with fastcnn.load(SHIPPED_ONNX, num_threads=1) as a, fastcnn.load(SHIPPED_FCNN, num_threads=1) as b:
        assert np.array_equal(a(x), b(x))


def test_metadata_and_labels_survive(onnx_path, tmp_path):
    labels = ["zéro", "chat 🐱", "a,b", "line\ttab"]
    path = tmp_path / "m.fcnn"
    fastcnn.convert(onnx_path, path, metadata={"labels": labels, "preprocessing": "x/255",
                                               "nested": {"mean": [0.5, 0.25], "ok": True}})
    with fastcnn.load(path) as m:
        assert m.labels == labels
        assert m.metadata["preprocessing"] == "x/255"
        assert m.metadata["nested"] == {"mean": [0.5, 0.25], "ok": True}
        assert m.metadata["source_format"] == "onnx"
        m.save(tmp_path / "again.fcnn")
    with fastcnn.load(tmp_path / "again.fcnn") as m:
        assert m.labels == labels


def test_onnx_metadata_labels_are_imported(tmp_path):
    onnx = pytest.importorskip("onnx")
    proto = small_cnn_onnx(np.random.default_rng(3))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "labels", "cat,dog,bird,fish"
    src = tmp_path / "m.onnx"
    onnx.save(proto, src)
    fastcnn.convert(src, tmp_path / "m.fcnn")
    with fastcnn.load(tmp_path / "m.fcnn") as m:
        assert m.labels == ["cat", "dog", "bird", "fish"]


def _ir_graph(initializers, nodes=None, metadata=None):
    nodes = nodes or [Node("Relu", "r", ["x"], ["y"])]
    g = Graph("g", [TensorSpec("x", (None, 3))], [TensorSpec("y", (None, 3))], nodes,
              initializers, metadata or {}, source="test")
    return g.check()


def test_every_dtype_zero_size_and_scalar_tensors_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f64": rng.standard_normal(7),
        "f16": rng.standard_normal((2, 2)).astype(np.float16),
        "i64": np.array([-(2 ** 62), 0, 2 ** 62], np.int64),
        "i32": np.arange(-3, 4, dtype=np.int32),
        "i16": np.array([-7, 7], np.int16),
        "i8": np.array([-128, 127], np.int8),
        "u8": np.array([0, 255], np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "big_endian": np.arange(5, dtype=">f4"),
        "strided": np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2],
    }
    path = str(tmp_path / "t.fcnn")
    fcnn.save(_ir_graph(tensors), path)
    graph, res = fcnn.load(path)
    try:
        for name, want in tensors.items():
            got = graph.initializers[name]
            assert got.dtype == want.dtype.newbyteorder("=") and got.shape == want.shape, name
            assert np.array_equal(got, want), name
        header = parts(path)[1]
        assert all(t["offset"] % fcnn.ALIGN == 0 for t in header["tensors"])
    finally:
        res.close()


def test_graph_without_weights_round_trips(tmp_path):
    # Regression: with no tensors the data region started past the end of the file.
    path = str(tmp_path / "relu.fcnn")
    fcnn.save(_ir_graph({}), path)
    with fastcnn.load(path, num_threads=1) as m:
        out = m(np.array([[-1, 0, 2]], np.float32))
    assert np.array_equal(out, [[0, 0, 2]])


def test_infinite_attributes_round_trip(tmp_path):
    clip = Node("Clip", "clip", ["x"], ["y"], {"min": 0.0, "max": float("inf")})
    path = str(tmp_path / "clip.fcnn")
    fcnn.save(_ir_graph({}, [clip]), path)
    with fastcnn.load(path, num_threads=1) as m:
        assert m.graph.nodes[0].attrs["max"] == float("inf")
        x = np.array([[-1, 3e38, 2]], np.float32)
        assert np.array_equal(m(x), np.maximum(x, 0))


# ----------------------------------------------------------------------------- zero copy
def _mapping_of(arr):
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base


def test_weights_are_read_only_views_of_the_mapping(fcnn_path):
    graph, res = fcnn.load(fcnn_path)
    try:
        mm = res._mm
        assert isinstance(mm, mmap.mmap)
        start = np.frombuffer(mm, np.uint8).ctypes.data
        for name, arr in graph.initializers.items():
            assert not arr.flags.writeable, name
            assert _mapping_of(arr) is mm, name
            addr = arr.ctypes.data
            assert start <= addr < start + len(mm), name
            assert addr % fcnn.ALIGN == 0, name
            with pytest.raises(ValueError):
                arr.reshape(-1)[0] = 1.0
    finally:
        del arr
        res.close()


def test_loaded_model_keeps_weights_in_the_mapping(fcnn_path):
    with fastcnn.load(fcnn_path) as m:
        w = m.graph.initializers["w"]
        assert not w.flags.writeable and isinstance(_mapping_of(w), mmap.mmap)
        del w


# ----------------------------------------------------------------------------- broken files
def _error(path, match):
    with pytest.raises(ModelFileError, match=match) as info:
        fastcnn.load(path)
    assert str(path) in str(info.value)
    return info.value


def test_newer_format_version_is_refused_clearly(fcnn_path):
    rewrite_header(fcnn_path, lambda h: None, preamble={"version": fcnn.FORMAT_VERSION + 1})
    err = _error(fcnn_path, "newer")
    assert f"version {fcnn.FORMAT_VERSION + 1}" in str(err) and "upgrade fastcnn" in str(err)


def test_version_zero_and_unknown_flags_are_refused(fcnn_path):
    rewrite_header(fcnn_path, lambda h: None, preamble={"version": 0})
    _error(fcnn_path, "invalid format version")


def test_unknown_flags_are_refused(fcnn_path):
    rewrite_header(fcnn_path, lambda h: None, preamble={"flags": 4})
    _error(fcnn_path, "unknown flags")


@pytest.mark.parametrize("where", ["preamble", "header", "data", "trailer_crc"])
def test_corrupt_byte_fails_the_checksum(fcnn_path, where):
    data = bytearray(Path(fcnn_path).read_bytes())
    d_off = fcnn.PREAMBLE.unpack_from(data, 0)[5]
    pos = {"preamble": 60, "header": 100, "data": d_off + 5, "trailer_crc": len(data) - 7}[where]
    data[pos] ^= 0x10
    Path(fcnn_path).write_bytes(bytes(data))
    _error(fcnn_path, "checksum mismatch")


@pytest.mark.parametrize("keep", [0, 1, 8, 63, 64, 79, 200, -1, -16, -17, "half"])
def test_truncated_file_is_refused(fcnn_path, keep):
    data = Path(fcnn_path).read_bytes()
    n = len(data) // 2 if keep == "half" else (keep if keep >= 0 else len(data) + keep)
    Path(fcnn_path).write_bytes(data[:n])
    with pytest.raises(ModelFileError):
        fastcnn.load(fcnn_path)
    with pytest.raises(ModelFileError):
        fcnn.load(fcnn_path)


def test_bad_magic_is_refused(fcnn_path):
    data = bytearray(Path(fcnn_path).read_bytes())
    data[:8] = b"NOTFCNN!"
    Path(fcnn_path).write_bytes(bytes(data))
    _error(fcnn_path, "not a .fcnn file")
    with pytest.raises(ModelFileError, match="bad magic"):
        fcnn.load(fcnn_path)


def test_text_mode_mangled_file_is_refused(fcnn_path):
    data = Path(fcnn_path).read_bytes().replace(b"\r\n", b"\n")
    Path(fcnn_path).write_bytes(data)
    with pytest.raises(ModelFileError):
        fastcnn.load(fcnn_path)


def test_missing_trailer_is_refused(fcnn_path):
    data = bytearray(Path(fcnn_path).read_bytes())
    data[-16:-8] = b"XXXXXXXX"
    Path(fcnn_path).write_bytes(bytes(data))
    _error(fcnn_path, "truncated or corrupt")


def _tensor(h, name="w"):
    return next(t for t in h["tensors"] if t["name"] == name)


@pytest.mark.parametrize("mutate, match", [
    (lambda h: _tensor(h).update(offset=10 ** 9), "outside the data region"),
    (lambda h: _tensor(h).update(offset=_tensor(h)["offset"] + 4), "outside the data region"),
    (lambda h: _tensor(h).update(offset=-64), "invalid offset or size"),
    (lambda h: _tensor(h).update(nbytes=_tensor(h)["nbytes"] - 4), "needs 540 bytes"),
    (lambda h: _tensor(h).update(nbytes=_tensor(h)["nbytes"] + 4), "needs 540 bytes"),
    (lambda h: _tensor(h).update(shape=[5, 3, 3, 4]), "needs 720 bytes"),
    (lambda h: _tensor(h).update(shape=[5, -3, 3, -3]), "invalid shape"),
    (lambda h: _tensor(h).update(shape=[2 ** 40, 0]), "invalid shape"),
    (lambda h: _tensor(h).update(shape=[True, 5]), "invalid shape"),
    (lambda h: _tensor(h).update(shape="5x3"), "invalid shape"),
    (lambda h: _tensor(h).update(dtype="object"), "unknown dtype"),
    (lambda h: _tensor(h).update(dtype="float128"), "unknown dtype"),
    (lambda h: _tensor(h).update(nbytes="540"), "invalid offset or size"),
    (lambda h: h["tensors"].append(dict(_tensor(h))), "appears twice"),
    (lambda h: h["tensors"].append(7), "bad tensor table entry"),
    (lambda h: h.pop("tensors"), "no tensor table"),
    (lambda h: h.update(format="onnx"), "not a .fcnn header"),
    (lambda h: h.pop("graph"), "no graph"),
    (lambda h: h["graph"].update(nodes={}), "nodes, inputs and outputs"),
    (lambda h: h["graph"]["nodes"][0].update(inputs="x"), "node #0 is malformed"),
    (lambda h: h["graph"]["nodes"][0].pop("op"), "node #0 is malformed"),
    (lambda h: h["graph"]["inputs"][0].update(shape=[None, -3, 7, 5]), "invalid shape"),
    (lambda h: h["graph"]["inputs"][0].update(dtype="complex64"), "unknown dtype"),
    (lambda h: h.update(metadata=[1, 2]), "metadata must be an object"),
    (lambda h: h["metadata"].update(labels="abcd"), "labels"),
    (lambda h: h["metadata"].update(labels=[1, 2, 3, 4]), "labels"),
])
def test_inconsistent_header_is_refused(fcnn_path, mutate, match):
    rewrite_header(fcnn_path, mutate)
    _error(fcnn_path, match)


@pytest.mark.parametrize("raw, match", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\x00{}", "not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, "not valid JSON"),   # deep nesting: no RecursionError escapes
    (b"[1, 2]", "not a .fcnn header"),
])
def test_garbage_header_is_refused(tmp_path, raw, match):
    path = tmp_path / "g.fcnn"
    d_off = (64 + len(raw) + 63) // 64 * 64
    pre = fcnn.PREAMBLE.pack(fcnn.MAGIC, 1, 0, 64, len(raw), d_off, 0)
    path.write_bytes(with_crc(pre + raw + b"\0" * (d_off - 64 - len(raw))))
    _error(path, match)


@pytest.mark.parametrize("field, value, match", [
    ("h_off", 128, "invalid header location"),
    ("h_len", 10 ** 9, "invalid header location"),
    ("h_len", 0, "invalid header location"),
    ("d_off", 10 ** 9, "invalid tensor data location"),
    ("d_off", 65, "invalid tensor data location"),
    ("d_len", 10 ** 9, "invalid tensor data location"),
])
def test_preamble_locations_outside_the_file_are_refused(fcnn_path, field, value, match):
    rewrite_header(fcnn_path, lambda h: None, preamble={field: value})
    _error(fcnn_path, match)


def test_undefined_tensor_in_a_node_is_a_graph_error(fcnn_path):
    rewrite_header(fcnn_path, lambda h: h["graph"]["nodes"][0]["inputs"].__setitem__(1, "nope"))
    with pytest.raises(GraphError, match="'nope'"):
        fastcnn.load(fcnn_path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        fastcnn.load(tmp_path / "absent.fcnn")
    with pytest.raises(ModelFileError, match="cannot open"):
        fcnn.load(str(tmp_path))


# ----------------------------------------------------------------------------- atomic save
def _leftovers(directory):
    return [p for p in os.listdir(directory) if p.endswith(".tmp")]


def test_save_writes_a_temp_file_in_the_same_directory_and_renames(fcnn_path, tmp_path, monkeypatch):
    calls = []
    real = os.replace

    def spy(src, dst):
        calls.append((src, dst))
        assert Path(src).exists() and Path(src).parent == Path(dst).parent.resolve()
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    with fastcnn.load(fcnn_path) as m:
        m.save(tmp_path / "out.fcnn")
    assert len(calls) == 1 and Path(calls[0][0]).name.startswith(".fcnn-")
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("fail_in", ["fsync", "replace", "write"])
def test_failed_save_leaves_the_old_file_intact(fcnn_path, tmp_path, monkeypatch, fail_in):
    target = tmp_path / "target.fcnn"
    old = b"the previous file"
    target.write_bytes(old)
    model = fastcnn.load(fcnn_path)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    if fail_in == "write":
        monkeypatch.setattr(fcnn.zlib, "crc32", boom)
    else:
        monkeypatch.setattr(os, fail_in, boom)
    with pytest.raises(ModelFileError, match="No space left on device"):
        model.save(target)
    monkeypatch.undo()
    model.close()
    assert target.read_bytes() == old
    assert not _leftovers(tmp_path)


def test_interrupted_save_leaves_the_old_file_intact(fcnn_path, tmp_path, monkeypatch):
    target = tmp_path / "target.fcnn"
    target.write_bytes(b"old")

    def interrupt(*a):
        raise KeyboardInterrupt

    with fastcnn.load(fcnn_path) as model:
        monkeypatch.setattr(os, "fsync", interrupt)
        with pytest.raises(KeyboardInterrupt):
            model.save(target)
        monkeypatch.undo()
    assert target.read_bytes() == b"old" and not _leftovers(tmp_path)


def test_unstorable_metadata_fails_before_touching_the_file(fcnn_path, tmp_path):
    target = tmp_path / "target.fcnn"
    target.write_bytes(b"old")
    with fastcnn.load(fcnn_path) as model:
        model.metadata["bad"] = np.arange(3)      # not JSON data
        with pytest.raises(ModelFileError, match="not JSON data"):
            model.save(target)
        model.metadata.pop("bad")
        model.metadata["labels"] = [0, 1, 2, 3]    # labels must be strings
        with pytest.raises(ModelFileError, match="labels"):
            model.save(target)
    assert target.read_bytes() == b"old" and not _leftovers(tmp_path)


def test_save_to_a_missing_directory_or_a_directory(fcnn_path, tmp_path):
    with fastcnn.load(fcnn_path) as model:
        with pytest.raises(ModelFileError, match="cannot write"):
            model.save(tmp_path / "no" / "such" / "dir.fcnn")
        with pytest.raises(ModelFileError, match="is a directory"):
            model.save(tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_saved_file_gets_the_usual_permissions(fcnn_path, tmp_path):
    old = os.umask(0o022)
    try:
        with fastcnn.load(fcnn_path) as model:
            model.save(tmp_path / "m.fcnn")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "m.fcnn").st_mode & 0o777) == 0o644


def test_saving_over_the_mapped_file_keeps_the_loaded_model_working(fcnn_path):
    x = feed(np.random.default_rng(5))
    with fastcnn.load(fcnn_path, num_threads=1) as m:
        want = m.run(None, x)[0]
        m.metadata["note"] = "resaved"
        m.save(fcnn_path)                       # replaces the file this model is mapped from
        assert np.array_equal(m.run(None, x)[0], want)
    with fastcnn.load(fcnn_path, num_threads=1) as m:
        assert m.metadata["note"] == "resaved"
        assert np.array_equal(m.run(None, x)[0], want)


# ----------------------------------------------------------------------------- closing
def _mapped(path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith(real) for line in f)


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")


@needs_proc
def test_close_releases_the_mapping(fcnn_path):
    m = fastcnn.load(fcnn_path)
    m.run(None, feed(np.random.default_rng(6)))
    assert _mapped(fcnn_path)
    m.close()
    assert not _mapped(fcnn_path)
    with pytest.raises(FastCNNError, match="closed"):
        m.run(None, feed(np.random.default_rng(6)))
    m.close()  # closing twice is harmless


@needs_proc
def test_context_manager_releases_the_mapping(fcnn_path):
    with fastcnn.load(fcnn_path) as m:
        m.run(None, feed(np.random.default_rng(7)))
        assert _mapped(fcnn_path)
    assert not _mapped(fcnn_path)


@needs_proc
def test_failed_load_releases_the_mapping(fcnn_path):
    rewrite_header(fcnn_path, lambda h: h["graph"]["nodes"][0].update(op="NoSuchOp"))
    with pytest.raises(FastCNNError):
        fastcnn.load(fcnn_path)
    assert not _mapped(fcnn_path)


def test_preamble_layout_is_stable():
    # The documented layout: 64-byte preamble, 16-byte trailer, 64-byte alignment.
    assert fcnn.PREAMBLE.size == 64 and fcnn.TRAILER.size == 16 and fcnn.ALIGN == 64
    assert fcnn.MAGIC == b"FCNN\x00\r\n\x1a"
    assert struct.calcsize("<8sIIQQQQ16x") == 64


def _depth(v):
    if isinstance(v, dict):
        return 1 + max([_depth(x) for x in v.values()] + [0])
    if isinstance(v, list):
        return 1 + max([_depth(x) for x in v] + [0])
    return 0


def test_header_nesting_check_counts_brackets_outside_strings_only():
    """json_nests_within (the header's depth check, done on the raw text) against the depth
    of the parsed value, on random nests whose strings hold brackets, quotes and backslashes."""
    rng = np.random.default_rng(11)
    pieces = ['[', ']', '{', '}', '"', '\\', '\\\\', '\\"', 'a', ' ']

    def value(depth):
        k = rng.integers(0, 4) if depth < 9 else 0
        if k == 0:
            return "".join(rng.choice(pieces, size=int(rng.integers(0, 6))))
        if k == 1:
            return int(rng.integers(-5, 5))
        if k == 2:
            return [value(depth + 1) for _ in range(int(rng.integers(0, 4)))]
        return {value(9) + str(i): value(depth + 1) for i in range(int(rng.integers(0, 4)))}

    for _ in range(300):
        v = {"m": value(0)}
        raw = json.dumps(v, ensure_ascii=bool(rng.integers(0, 2))).encode()
        d = _depth(v)
        assert fcnn.json_nests_within(raw, d) and not fcnn.json_nests_within(raw, d - 1), raw


@pytest.mark.parametrize("passes", [True, False])
def test_convert_refuses_a_graph_that_would_not_load(tmp_path, passes):
    """A Conv whose weights do not match its input's channels: no pass has anything to change
    in it (nothing folds, no residual Add), so the passes infer no types; convert checks the
    graph itself and writes no file, with the error loading would give."""
    from onnx import helper
    w = np.ones((4, 5, 3, 3), np.float32)   # 5 input channels; the input has 3
    model = onnx_model([helper.make_node("Conv", ["x", "w"], ["y"])], {"x": (1, 3, 8, 8)}, ["y"], {"w": w})
    src = save_onnx(model, tmp_path)
    with pytest.raises(GraphError) as loading:
        fastcnn.load(src)
    with pytest.raises(GraphError) as converting:
        fastcnn.convert(src, tmp_path / "m.fcnn", passes=passes)
    assert str(converting.value) == str(loading.value)
    assert "channels" in str(converting.value)
    assert not (tmp_path / "m.fcnn").exists()


def test_the_shipped_example_records_the_current_pipeline():
    """models/lenet5_digits.fcnn names the pass pipeline of this fastcnn, so loading it skips
    the passes (README's first command loads it). A change to the pipeline makes it stale:
    regenerate it with models/train_lenet_digits.py (or fastcnn.convert from the .onnx beside
    it, with its labels and preprocessing metadata)."""
    import fastcnn.passes as passes_mod
    shipped = Path(__file__).resolve().parents[2] / "models" / "lenet5_digits.fcnn"
    assert parts(str(shipped))[1].get("passes") == passes_mod.PIPELINE_ID
