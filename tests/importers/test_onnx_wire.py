"""onnx_wire.split_raw_data: the message without the graph initializers' raw_data parses to the
same model once the bytes at the returned spans are put back; the importer that uses it copies
each weight from the file and gives the arrays protobuf's parse gives; bytes it cannot walk
raise WireError only, and such files still load (through onnx.load)."""
import glob
import os

import numpy as np
import pytest

import fastcnn
from fastcnn.importers import onnx as onnx_importer
from fastcnn.importers.onnx_wire import WireError, split_raw_data

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def _restored(buf: bytes):
    """The model parsed from split_raw_data's message, raw_data put back from the spans."""
    stripped, spans = split_raw_data(buf)
    model = onnx.ModelProto.FromString(stripped)
    assert len(spans) == len(model.graph.initializer)
    for t, span in zip(model.graph.initializer, spans):
        assert not t.HasField("raw_data")
        if span is not None:
            t.raw_data = buf[span[0]:span[0] + span[1]]
    return model, stripped


def _model(rng):
    """Conv -> Relu -> Gemm with raw_data weights, a float_data bias, an int64 shape, an empty
    tensor and metadata; a Constant node holds a tensor of its own (left in the message)."""
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((10, 4 * 4 * 4)).astype(np.float32)
    bias = helper.make_tensor("b", TensorProto.FLOAT, [4], rng.standard_normal(4).tolist())
    inits = [numpy_helper.from_array(w, "w"), bias, numpy_helper.from_array(g, "g"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
             numpy_helper.from_array(np.zeros((0,), np.float32), "empty")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["f"]),
             helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(
                 rng.standard_normal(10).astype(np.float32), "kv")),
             helper.make_node("Gemm", ["f", "g", "k"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="test")
    helper.set_model_props(model, {"labels": "a,b"})
    return model


def test_split_then_restored_is_the_same_model():
    model = _model(np.random.default_rng(0))
    buf = model.SerializeToString()
    restored, stripped = _restored(buf)
    assert restored == onnx.ModelProto.FromString(buf)
    assert len(stripped) < 1200 < len(buf) - 1000   # the weights are out of the message
    _, spans = split_raw_data(buf)
    assert [s is None for s in spans] == [False, True, False, False, False]  # b: float_data
    assert spans[4][1] == 0                                                 # empty raw_data


def test_protobuf_merge_rules_are_kept():
    """The graph field twice (protobuf merges the two: initializers of both, in order) and a
    tensor with raw_data twice (the last one counts); unknown fields are kept."""
    rng = np.random.default_rng(1)
    model = _model(rng)
    first = helper.make_graph([], "", [], [], [numpy_helper.from_array(np.arange(3, dtype=np.float32), "extra")])
    t = numpy_helper.from_array(np.arange(2, dtype=np.float32), "twice").SerializeToString()
    t += b"\x4a\x08" + np.array([7, 8], np.float32).tobytes()   # field 9 (raw_data) again
    second = b"\x2a" + bytes([len(t)]) + t                          # GraphProto.initializer
    unknown = b"\xa0\x06\x05"                                        # field 100, varint 5
    buf = (model.SerializeToString() + b"\x3a" + bytes([len(first.SerializeToString())])
           + first.SerializeToString() + b"\x3a" + bytes([len(second)]) + second + unknown)
    reference = onnx.ModelProto.FromString(buf)
    restored, _ = _restored(buf)
    assert restored == reference
    names = [t.name for t in reference.graph.initializer]
    assert names[-2:] == ["extra", "twice"]
    assert np.array_equal(numpy_helper.to_array(restored.graph.initializer[-1]), [7, 8])


@pytest.mark.parametrize("folder", ["pytorch-converted", "pytorch-operator", "simple", "light"])
def test_every_onnx_test_model_splits_to_the_same_model(folder):
    paths = sorted(glob.glob(os.path.join(DATA, folder, "*", "model.onnx"))
                   + glob.glob(os.path.join(DATA, folder, "*.onnx")))
    if not paths:
        pytest.skip(f"no {folder} data in this onnx wheel")
    for path in paths[:400]:
        with open(path, "rb") as f:
            buf = f.read()
        restored, _ = _restored(buf)
        assert restored == onnx.ModelProto.FromString(buf), path


def test_malformed_bytes_raise_wire_error_only():
    """Every truncation and many single-byte changes of a model: WireError or a split, never
    another exception; a split always parses as protobuf parses the same bytes."""
    buf = _model(np.random.default_rng(2)).SerializeToString()
    rng = np.random.default_rng(3)
    cases = [buf[:n] for n in range(0, len(buf), 7)]
    for _ in range(1500):
        b = bytearray(buf)
        b[rng.integers(len(b))] = rng.integers(256)
        cases.append(bytes(b))
    cases += [b"\x0b", b"\x3a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x00"]
    split = refused = 0
    for b in cases:
        try:
            restored, _ = _restored(b)
        except WireError:
            refused += 1
            continue
        except Exception as e:   # protobuf refuses what the walk accepted: compare the two
            with pytest.raises(Exception):
                onnx.ModelProto.FromString(b)
            assert "DecodeError" in type(e).__name__ or isinstance(e, (ValueError, RuntimeError))
            continue
        split += 1
        assert restored == onnx.ModelProto.FromString(b)
    assert split > 100 and refused > 10


def test_a_file_of_very_many_fields_is_left_to_protobuf(monkeypatch):
    """Past MAX_FIELDS fields the walk stops (WireError): protobuf's parser takes such a file."""
    from fastcnn.importers import onnx_wire
    buf = _model(np.random.default_rng(8)).SerializeToString()
    split_raw_data(buf)
    monkeypatch.setattr(onnx_wire, "MAX_FIELDS", 12)
    with pytest.raises(WireError, match="more than 12 fields"):
        split_raw_data(buf)
    monkeypatch.setattr(onnx_wire, "MAX_FIELDS", 200_000)
    with pytest.raises(WireError, match="more than 200000 fields"):
        split_raw_data(b"\xa0\x06\x05" * 200_001)   # unknown varint fields only


def _write(tmp_path, name, data: bytes) -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_import_file_views_each_weight_in_the_file(tmp_path):
    """raw_data weights are read-only arrays viewing the mapped file (nothing copied, as from a
    .fcnn file) where they start at a multiple of their item size, or are Conv or Gemm weights;
    others are aligned copies; a tensor in float_data is an array of its own. The values equal
    protobuf's parse, after the file's pages are released, and after the file is deleted."""
    import mmap
    model = _model(np.random.default_rng(4))
    path = _write(tmp_path, "m.onnx", model.SerializeToString())
    got, mapped = onnx_importer.import_file_mapped(path)
    want = onnx_importer.import_model(onnx.load(path), path)
    assert set(got.initializers) == set(want.initializers)

    def check():
        for name, arr in want.initializers.items():
            mine = got.initializers[name]
            assert mine.dtype == arr.dtype and np.array_equal(mine, arr), name
            assert not mine.flags.writeable, name

    check()

    def views_file(arr):
        base = arr
        while isinstance(base, (np.ndarray, memoryview)):
            base = base.base if isinstance(base, np.ndarray) else base.obj   # array, memoryview
        return isinstance(base, mmap.mmap)

    # the Conv and Gemm weights stay in the file wherever protobuf put them; any other array
    # viewing the file is aligned to its item size (a misaligned one is copied: C code reads it)
    assert views_file(got.initializers["w"]) and views_file(got.initializers["g"])
    misaligned = [k for k, v in got.initializers.items() if not v.flags.aligned]
    assert set(misaligned) <= {"w", "g"}
    assert not views_file(got.initializers["shape"]), "expected the shape at a misaligned offset"
    assert got.initializers["shape"].flags.aligned
    assert got.initializers["b"].flags.owndata          # float_data: decoded into its own array
    mapped.release_pages()
    check()
    mapped.close()      # the arrays keep the mapping
    os.unlink(path)
    check()
    assert float(np.abs(got.initializers["w"]).sum()) > 0
    assert got.metadata["labels"] == ["a", "b"]


def test_a_file_the_walk_refuses_loads_through_protobuf(tmp_path):
    """An unknown field of the group wire type: protobuf skips it, the walk refuses it, and the
    file loads (onnx.load) with the same outputs."""
    model = _model(np.random.default_rng(5))
    buf = model.SerializeToString()
    with pytest.raises(WireError):
        split_raw_data(buf + b"\xa3\x06\xa4\x06")   # field 100: start group, end group
    good = fastcnn.load(_write(tmp_path, "good.onnx", buf))
    odd = fastcnn.load(_write(tmp_path, "group.onnx", buf + b"\xa3\x06\xa4\x06"))
    x = np.random.default_rng(6).standard_normal((1, 3, 4, 4)).astype(np.float32)
    assert np.array_equal(good.run(None, {"x": x})[0], odd.run(None, {"x": x})[0])


def test_truncated_file_is_a_model_file_error(tmp_path):
    buf = _model(np.random.default_rng(7)).SerializeToString()
    for n in (5, len(buf) // 2, len(buf) - 3):
        with pytest.raises(fastcnn.ModelFileError, match="not a valid ONNX model|no graph|initializer"):
            fastcnn.load(_write(tmp_path, f"cut{n}.onnx", buf[:n]))


def test_weights_in_an_external_file_load_as_inline_ones(tmp_path):
    """A model saved with its weights in a separate file (onnx's external data, as models over
    2 GB must be): the message keeps only each tensor's location, which onnx's helper reads."""
    model = _model(np.random.default_rng(9))
    inline = _write(tmp_path, "inline.onnx", model.SerializeToString())
    ext_dir = tmp_path / "ext"
    ext_dir.mkdir()
    onnx.save_model(model, str(ext_dir / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    assert os.path.getsize(ext_dir / "weights.bin") > 500
    _, spans = split_raw_data((ext_dir / "m.onnx").read_bytes())
    assert all(s is None for s in spans)            # no weight bytes in the message itself
    got = onnx_importer.import_file(str(ext_dir / "m.onnx")).initializers
    want = onnx_importer.import_file(inline).initializers
    for name in ("w", "g", "shape"):
        assert np.array_equal(got[name], want[name]), name
    os.unlink(ext_dir / "weights.bin")
    with pytest.raises(fastcnn.ModelFileError, match="not a valid ONNX model"):
        fastcnn.load(str(ext_dir / "m.onnx"))


def _with_misaligned_weights(tmp_path, prefix, make):
    """(path, graph, name): the model make(name) written with the weights `name` at an odd
    byte offset in the file (a name one byte longer moves them one byte), and imported."""
    for pad in range(8):
        name = prefix + "x" * pad
        path = _write(tmp_path, f"m{pad}.onnx", make(name).SerializeToString())
        g, mapped = onnx_importer.import_file_mapped(path)
        mapped.close()      # the arrays keep the mapping
        if g.initializers[name].ctypes.data % 4:
            return path, g, name
    pytest.fail("no name length put the weights at a misaligned offset")


@pytest.mark.parametrize("with_bn", [False, True])
def test_conv_weights_at_a_misaligned_offset_run_in_every_conv_kernel(tmp_path, with_bn):
    """A Conv's weights that protobuf placed at an odd byte offset stay a view of the file: the
    kernels get aligned copies or scaled weights for packing, and the Winograd step reads them
    bytewise to recompute outputs a NaN made non-finite. Outputs match numpy's conv (NaN where
    a direct conv has them), for batch 1 and 4 (tile or GEMM, and Winograd) on 1 and 2 threads."""
    from reference import conv2d
    rng = np.random.default_rng(11)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    mean, var = rng.standard_normal(16).astype(np.float32), rng.uniform(0.2, 2, 16).astype(np.float32)

    def make(name):
        nodes = [helper.make_node("Conv", ["x", name], ["c"], pads=[1, 1, 1, 1])]
        inits = [numpy_helper.from_array(w, name)]
        if with_bn:
            nodes.append(helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"]))
            inits += [numpy_helper.from_array(a, k) for k, a in
                      (("g", gamma), ("b", beta), ("m", mean), ("v", var))]
        else:
            nodes.append(helper.make_node("Identity", ["c"], ["y"]))
        graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16, 12, 12])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])

    path, _, _ = _with_misaligned_weights(tmp_path, "w", make)
    for n in (1, 4):
        x = rng.standard_normal((n, 16, 12, 12)).astype(np.float32)
        x[n - 1, 3, 5, 7] = np.nan
        want = conv2d(x, w, None, pads=(1, 1, 1, 1))
        if with_bn:
            s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-5)
            want = (want - mean.reshape(1, -1, 1, 1)) * s.reshape(1, -1, 1, 1) + beta.reshape(1, -1, 1, 1)
        for threads in (1, 2):
            model = fastcnn.load(path, num_threads=threads)
            got = model.run(None, {"x": x})[0]
            kinds = {type(s).__name__ for s in model.plan_for([x.shape]).steps}
            assert kinds == ({"ConvTileStep"} if n == 1 else {"ConvWinogradStep"})
            assert np.array_equal(np.isnan(got), np.isnan(want))
            ok = np.isfinite(want)
            assert np.abs(got[ok] - want[ok]).max() <= 1e-4 + 1e-3 * np.abs(want[ok]).max()


@pytest.mark.parametrize("trans_b,alpha", [(1, 1.0), (1, 0.75), (0, 1.0), (0, 0.75)])
def test_gemm_weights_at_a_misaligned_offset_stay_in_the_file_and_run(tmp_path, trans_b, alpha):
    """A Gemm's weights that protobuf placed at an odd byte offset stay a view of the file (no
    aligned copy at import): they are packed bytewise (without transB and with an alpha, from
    a scaled copy). Outputs match numpy's alpha * x @ B' + C for batch 1 and 3 on 1 and 2 threads; the
    weights also reach fine-tuning, whose head starts from the same layer."""
    import mmap
    rng = np.random.default_rng(12)
    k, n = 37, 21
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = rng.standard_normal(n).astype(np.float32)
    def make(name):
        node = helper.make_node("Gemm", ["x", name, "c"], ["y"], transB=trans_b, alpha=alpha)
        graph = helper.make_graph([node], "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
                                  [numpy_helper.from_array(b, name), numpy_helper.from_array(c, "c")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])

    path, g, name = _with_misaligned_weights(tmp_path, "b", make)
    base = g.initializers[name]
    while isinstance(base, (np.ndarray, memoryview)):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    assert isinstance(base, mmap.mmap)      # not copied
    from fastcnn.finetune.head import find_head
    head = find_head(g).layers[-1]          # the training layout (k, n), an aligned array
    assert head.weight.flags.aligned and head.weight.shape == (k, n)
    assert np.array_equal(head.weight, (b.T if trans_b else b) * np.float32(alpha))
    want_b = (b.T if trans_b else b).astype(np.float64)
    for rows in (1, 3):
        x = rng.standard_normal((rows, k)).astype(np.float32)
        want = alpha * (x.astype(np.float64) @ want_b) + c
        for threads in (1, 2):
            got = fastcnn.load(path, num_threads=threads).run(None, {"x": x})[0]
            assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_scan_fields_checks_every_position_and_length():
    """The C field scanner on hand-made messages: each wire type's field, then a varint running
    past the end, one of 11 bytes, one beyond 64 bits, a length near 2^64 (compared before it is
    added), fixed-size values cut short, field number 0, wire types 3/4/6/7, a range outside
    the buffer, and the budget."""
    from fastcnn._kernels.wire import scan_fields
    msg = b"\x08\x96\x01" + b"\x11" + bytes(8) + b"\x1a\x03abc" + b"\x25" + bytes(4)
    fields, err = scan_fields(msg, 0, len(msg), 10)
    assert err is None
    assert fields == [(1, 0, 0, 1, 3), (2, 1, 3, 4, 12), (3, 2, 12, 14, 17), (4, 5, 17, 18, 22)]
    assert scan_fields(msg, 3, 12, 10) == ([(2, 1, 3, 4, 12)], None)
    assert scan_fields(msg, 5, 5, 10) == ([], None)
    cases = {
        b"\x08\x96": "truncated varint",
        b"\x08" + b"\x80" * 9 + b"\x81\x01": "varint longer than 10 bytes",
        b"\x08" + b"\xff" * 9 + b"\x02": "varint beyond 64 bits",
        b"\x1a" + b"\xff" * 9 + b"\x01": "a field runs past the end",
        b"\x1a\x04abc": "a field runs past the end",
        b"\x11" + bytes(7): "a field runs past the end",
        b"\x25" + bytes(3): "a field runs past the end",
        b"\x02\x00": "field number 0",
    }
    for wire in (3, 4, 6, 7):
        cases[bytes([8 | wire, 0])] = f"wire type {wire}"
    for data, want in cases.items():
        fields, err = scan_fields(b"\x08\x01" + data, 0, 2 + len(data), 10)
        assert err is not None and err.startswith(want), (data, err)
        assert fields == [(1, 0, 0, 1, 2)], "the fields before the error are listed"
    assert scan_fields(b"\x08\x01" + b"\x08\x9f" + b"\x01", 0, 4, 10)[1] == "truncated varint"
    for start, end in ((0, 23), (-1, 5), (6, 5)):
        assert scan_fields(msg, start, end, 10) == ([], "a message outside the buffer")
    fields, err = scan_fields(msg, 0, len(msg), 2)
    assert len(fields) == 2 and err == "more than the field budget"


@pytest.mark.parametrize("shared", [False, True])
def test_batchnorm_parameters_at_a_misaligned_offset(tmp_path, shared):
    """A BatchNormalization's parameters that protobuf placed at an odd byte offset stay views
    of the file (only numpy reads them, as float64 copies), unless another op reads one too
    (shared: an Add after the BN, whose kernel gets an aligned copy); folded into the conv and
    unfolded (passes off, after a Relu) the outputs match numpy's."""
    from reference import conv2d
    rng = np.random.default_rng(12)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    mean, var = rng.standard_normal(8).astype(np.float32), rng.uniform(0.2, 2, 8).astype(np.float32)

    def make(name):
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("BatchNormalization", ["c", name, "b", "m", "v"], ["n"])]
        nodes.append(helper.make_node("Add", ["n", name + "_4d"], ["y"]) if shared
                     else helper.make_node("Relu", ["n"], ["y"]))
        inits = [numpy_helper.from_array(a, k) for k, a in
                 (("w", w), (name, gamma), ("b", beta), ("m", mean), ("v", var))]
        if shared:   # the same bytes as a (1, 8, 1, 1) tensor: a Reshape of the BN's gamma
            nodes.insert(0, helper.make_node("Reshape", [name, "shape4"], [name + "_4d"]))
            inits.append(numpy_helper.from_array(np.array([1, 8, 1, 1], np.int64), "shape4"))
        graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 6, 6])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])

    for pad in range(8):   # a name one byte longer moves the weights after it one byte
        name = "gamma" + "x" * pad
        buf = make(name).SerializeToString()
        if buf.find(gamma.tobytes()) % 4:
            break
    else:
        pytest.fail("no name length put gamma at a misaligned offset")
    path = _write(tmp_path, "m.onnx", buf)
    g, mapped = onnx_importer.import_file_mapped(path)
    mapped.close()      # the arrays keep the mapping
    import mmap
    base = g.initializers[name]
    while isinstance(base, (np.ndarray, memoryview)):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    assert isinstance(base, mmap.mmap) != shared, "a view of the file unless another op reads it"
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-5)
    n = (conv2d(x, w, None, pads=(1, 1, 1, 1)) - mean.reshape(1, -1, 1, 1)) * s.reshape(1, -1, 1, 1) \
        + beta.reshape(1, -1, 1, 1)
    want = n + gamma.reshape(1, -1, 1, 1) if shared else np.maximum(n, 0)
    for passes in (True, False):
        got = fastcnn.load(path, passes=passes).run(None, {"x": x})[0]
        assert np.abs(got - want).max() <= 1e-4 + 1e-3 * np.abs(want).max()
