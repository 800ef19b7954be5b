"""onnx_schema: a fresh process reads .onnx files with ONNX's message classes alone (the onnx
package is not imported unless a file needs one of its helpers), and gets the same graphs as a
process that imported onnx; a missing or unusable schema module falls back to the package."""
import json

import numpy as np
import pytest

import fastcnn
from helpers import fastcnn_env, run_isolated
from fastcnn.importers import onnx_schema

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# The child loads each file, runs it on a fixed input and reports whether onnx was imported
# after each load, and every initializer and output as lists.
CHILD = r"""
import json, sys
import numpy as np
import fastcnn
from fastcnn.importers import onnx as onnx_importer
out = []
for path in PATHS:
    g = onnx_importer.import_file(path)
    m = fastcnn.load(path)
    x = np.linspace(-1, 1, 48, dtype=np.float32).reshape(1, 3, 4, 4)
    y = m.run(None, {"x": x})[0]
    out.append({"onnx_imported": "onnx" in sys.modules,
                "inits": {k: [str(v.dtype), v.tolist()] for k, v in g.initializers.items()},
                "y": y.tolist()})
print(json.dumps(out))
"""


def _model(rng, typed_bias: bool):
    """Conv -> Relu -> Reshape -> Gemm; every tensor in raw_data unless typed_bias (the conv
    bias in float_data, the constant in a Constant node's attribute)."""
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    g = rng.standard_normal((10, 4 * 4 * 4)).astype(np.float32)
    bias = helper.make_tensor("b", TensorProto.FLOAT, [4], b.tolist()) if typed_bias \
        else numpy_helper.from_array(b, "b")
    inits = [numpy_helper.from_array(w, "w"), bias, numpy_helper.from_array(g, "g"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _child(paths, cwd, **env):
    """CHILD in a fresh interpreter (the fastcnn under test, cwd outside the checkout)."""
    run = run_isolated(f"PATHS = {[str(p) for p in paths]!r}\n" + CHILD, cwd,
                       env={**fastcnn_env(), **env})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def _here(path):
    """The file's initializers as onnx's own decoder reads them (numpy_helper, not fastcnn's
    importer), and the output this process (onnx imported) computes."""
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    x = np.linspace(-1, 1, 48, dtype=np.float32).reshape(1, 3, 4, 4)
    y = fastcnn.load(str(path)).run(None, {"x": x})[0]
    return {k: [str(v.dtype), v.tolist()] for k, v in inits.items()}, y.tolist()


@pytest.mark.parametrize("impl", ["", "python"])
def test_a_fresh_process_reads_onnx_without_the_onnx_package(tmp_path, impl):
    """raw_data only: onnx is never imported. A tensor in float_data needs onnx's numpy helper
    (imported then), and a file read after that gets the same arrays as before. With protobuf's
    pure-Python implementation as well as its default one."""
    raw = tmp_path / "raw.onnx"
    typed = tmp_path / "typed.onnx"
    raw.write_bytes(_model(np.random.default_rng(0), False).SerializeToString())
    typed.write_bytes(_model(np.random.default_rng(1), True).SerializeToString())
    env = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": impl} if impl else {}
    got = _child([raw, typed, raw], tmp_path, **env)
    assert [r["onnx_imported"] for r in got] == [False, True, True]
    for r, path in zip(got, (raw, typed, raw)):
        inits, y = _here(path)
        assert r["inits"] == inits
        assert r["y"] == y


def test_external_data_loads_in_a_fresh_process(tmp_path):
    """Weights in a separate file: the message names their location; onnx's external-data
    helper (the package imported for it) reads them, and the arrays equal the inline file's."""
    model = _model(np.random.default_rng(2), False)
    inline = tmp_path / "inline.onnx"
    inline.write_bytes(model.SerializeToString())
    ext_dir = tmp_path / "ext"
    ext_dir.mkdir()
    onnx.save_model(model, str(ext_dir / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    got = _child([ext_dir / "m.onnx"], tmp_path)[0]
    assert got["onnx_imported"]
    inits, y = _here(inline)
    assert got["inits"] == inits and got["y"] == y


def test_an_unusable_schema_module_falls_back_to_the_package(monkeypatch, tmp_path):
    """A wheel without the schema module, or one that fails to run (protobuf's version check
    raises): the onnx package is imported instead."""
    import importlib.util
    (tmp_path / "onnx_ml_pb2.py").write_text("raise ImportError('protobuf too old')\n")
    real = importlib.util.find_spec("onnx")
    for folder in (tmp_path / "empty", tmp_path):
        spec = importlib.util.spec_from_file_location(
            "onnx", str(folder / "__init__.py"), submodule_search_locations=[str(folder)])
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec)
        assert onnx_schema._load_schema_alone() is onnx
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: real)
    alone = onnx_schema._load_schema_alone()
    assert alone is not onnx and alone.ModelProto is onnx.ModelProto
