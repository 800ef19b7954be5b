"""The other engines of bench/engines.py compute what onnxruntime computes on the zoo models
(each test skips where its engine is not installed), and run.py's report picks and flags them
right (pure functions on made-up rows: these run everywhere)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from bench_support import TEST_SIZE, load_bench_module, ort_run, zoo
from helpers import assert_close, onnx_model, save_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

engines = load_bench_module("engines")
run = load_bench_module("run")


@pytest.mark.parametrize("engine", engines.OTHER_ENGINES)
@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_other_engine_matches_onnxruntime(engine, name, zoo_files, tmp_path_factory, monkeypatch):
    if engines.missing(engine):
        pytest.skip(engines.missing(engine))
    # ncnn's conversions go to a folder of this session, not bench/zoo/
    monkeypatch.setattr(engines, "NCNN_CACHE", str(tmp_path_factory.getbasetemp() / "ncnn"))
    shape1 = zoo.sample_input(name, 1, size=TEST_SIZE[name]).shape
    runner = engines.open_engine(engine, zoo_files[name], 2, shape1)
    try:
        for batch in (1, 3):   # 3: a shape the runner was not opened for
            x = zoo.sample_input(name, batch, seed=batch, size=TEST_SIZE[name])
            ref = ort_run(zoo_files[name], x)
            got = runner(x)
            assert np.abs(ref).max() > 0.1, "degenerate model output"
            assert_close(got, ref, f"{engine} {name} batch {batch}")
            again = runner(x)
            assert again is not got, "a runner must return a new array per call"
            assert_close(again, ref, f"{engine} {name} batch {batch}, second call")
    finally:
        runner.close()


def _one_node_model(tmp_path, node, inits=None):
    """A model of one node reading the zoo's input name (1, 2, 5, 5), saved under tmp_path."""
    return save_onnx(onnx_model([node], {zoo.INPUT_NAME: [1, 2, 5, 5]}, ["y"], inits),
                     str(tmp_path))


def test_torch_mapping_refuses_what_it_cannot_express(tmp_path):
    pytest.importorskip("torch")
    from onnx import helper
    path = _one_node_model(tmp_path, helper.make_node("Tanh", [zoo.INPUT_NAME], ["y"], name="t"))
    with pytest.raises(engines.UnsupportedModel, match="'t': op Tanh"):
        engines.torch_module(path)
    path = _one_node_model(tmp_path, helper.make_node("Mul", [zoo.INPUT_NAME, "k"], ["y"], name="m"),
                           {"k": np.array(2.0, np.float32)})
    with pytest.raises(engines.UnsupportedModel, match="'m' \\(Mul\\): a constant operand"):
        engines.torch_module(path)
    path = _one_node_model(tmp_path, helper.make_node("Conv", [zoo.INPUT_NAME, "w"], ["y"], name="c",
                                                      pads=[0, 0, 1, 1]),
                           {"w": np.ones((2, 2, 3, 3), np.float32)})
    with pytest.raises(engines.UnsupportedModel, match="asymmetric pads"):
        engines.torch_module(path)


def test_torch_mapping_of_pools_and_clip_against_onnxruntime(tmp_path):
    pytest.importorskip("torch")
    from onnx import helper
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5), np.float32) * 4
    assert x.max() > 6.5 and x.min() < -1.5
    cases = [
        (helper.make_node("MaxPool", [zoo.INPUT_NAME], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                          ceil_mode=1), None),
        (helper.make_node("AveragePool", [zoo.INPUT_NAME], ["y"], kernel_shape=[2, 2], strides=[3, 3], pads=[1, 1, 1, 1],
                          count_include_pad=0), None),
        (helper.make_node("AveragePool", [zoo.INPUT_NAME], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                          count_include_pad=1), None),
        (helper.make_node("Clip", [zoo.INPUT_NAME, "lo", "hi"], ["y"]),
         {"lo": np.array(-1.5, np.float32), "hi": np.array(2.0, np.float32)}),
        (helper.make_node("Clip", [zoo.INPUT_NAME, "lo", "hi"], ["y"]),   # ReLU6: x goes past 6
         {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}),
        (helper.make_node("Clip", [zoo.INPUT_NAME, "lo"], ["y"]), {"lo": np.array(0.0, np.float32)}),
    ]
    for node, inits in cases:
        path = _one_node_model(tmp_path, node, inits)
        runner = engines.open_engine("torch", path, 1, x.shape)
        assert_close(runner(x), ort_run(path, x), f"torch {node.op_type} {node.attribute}")


@pytest.mark.parametrize("order", ["x_first", "sigmoid_first"])
def test_torch_mapping_of_silu_and_products_against_onnxruntime(tmp_path, order):
    """x * Sigmoid(x) either way round becomes one nn.SiLU; Sigmoid alone and a product of two
    other tensors stay what they are."""
    pytest.importorskip("torch")
    from onnx import helper
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 5), np.float32) * 4
    mul_in = [zoo.INPUT_NAME, "s"] if order == "x_first" else ["s", zoo.INPUT_NAME]
    nodes = [helper.make_node("Sigmoid", [zoo.INPUT_NAME], ["s"]),
             helper.make_node("Mul", mul_in, ["silu"]),
             helper.make_node("Sigmoid", ["silu"], ["s2"]),
             helper.make_node("Mul", ["s2", "s"], ["y"])]   # not a SiLU: s2 = Sigmoid(silu)
    path = save_onnx(onnx_model(nodes, {zoo.INPUT_NAME: [1, 2, 5, 5]}, ["y"]), str(tmp_path))
    gm = engines.torch_module(path)
    kinds = [type(getattr(gm, n.target)).__name__ for n in gm.graph.nodes if n.op == "call_module"]
    assert sorted(kinds) == ["SiLU", "Sigmoid", "Sigmoid"]   # the first Sigmoid stays: s is used
    runner = engines.open_engine("torch", path, 1, x.shape)
    assert_close(runner(x), ort_run(path, x), f"torch SiLU {order}")


def _row(ms, other_diff, tol=1e-3):
    return {"model": "m", "batch": 1, "threads": 1, "flops": 1e6, "ms": ms,
            "p10_ms": dict(ms), "spread": {k: 0.1 for k in ms}, "calls": {k: 3 for k in ms},
            "spin_down_ms": {k: None for k in ms}, "others": None, "diff": 1e-6, "tol": tol,
            "ok": True, "other_diff": other_diff}


def test_report_compares_with_the_fastest_other_engine_that_was_right():
    r = _row({"fastcnn": 1.0, "ort": 2.0, "openvino": 0.5, "torch": 4.0},
             {"openvino": 0.1, "torch": 1e-6})   # openvino fastest, but wrong
    assert run.best_other(r) == ("torch", 4.0)
    line = run.row_line(r)
    assert "vs torch 0.25" in line and "openvino WRONG OUTPUT" in line
    table = "\n".join(run.timing_table([r], {1: 100.0}))
    assert "| 0.25 (torch) |" in table and "**openvino wrong: 1.0e-01**" in table
    assert "fastcnn / best other" in table
    # no other engine, or none right: no comparison
    assert run.best_other(_row({"fastcnn": 1.0, "ort": 2.0}, {})) is None
    plain = "\n".join(run.timing_table([_row({"fastcnn": 1.0, "ort": 2.0}, {})], {1: 100.0}))
    assert "best other" not in plain


def test_memory_table_has_a_column_per_other_engine():
    rss = {"import_mib": 40.0, "peak_mib": 50.0}
    m = {"model": "m", "threads": 2, "convert_s": 0.01, "onnx_mb": 1.0, "fcnn_mb": 1.0,
         "load_s": {"fastcnn (.onnx)": 0.002, "fastcnn (.fcnn)": 0.001, "ort": 0.003, "openvino": 0.03},
         "rss": {"fastcnn (.onnx)": rss, "fastcnn (.fcnn)": rss, "ort": rss, "openvino": dict(rss, peak_mib=99.0)}}
    lines = run.memory_table([m])
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[head.index("load ms openvino")] == "30.0"
    assert cells[head.index("peak RSS MiB openvino")] == "99"


def test_ncnn_conversion_keeps_float32_weights(zoo_files, tmp_path):
    if engines.missing("ncnn"):
        pytest.skip(engines.missing("ncnn"))
    # pnnx writes fp16 weights unless told otherwise: an ncnn at half precision is no peer
    param, weights = engines.ncnn_files(zoo_files["edge_cnn"], (1, 3, 32, 32), cache=str(tmp_path))
    n_params = sum(int(np.prod(t.dims)) for t in onnx.load(zoo_files["edge_cnn"]).graph.initializer)
    assert os.path.getsize(weights) >= 4 * n_params * 0.9
    # cached: the same files again, not a second conversion
    mtime = os.path.getmtime(weights)
    assert engines.ncnn_files(zoo_files["edge_cnn"], (1, 3, 32, 32), cache=str(tmp_path)) == (param, weights)
    assert os.path.getmtime(weights) == mtime


def test_loads_are_timed_for_the_engines_that_ran_the_model():
    rows = [_row({"fastcnn": 1.0, "ort": 2.0, "torch": 3.0}, {"torch": 1e-6}),
            _row({"fastcnn": 1.0, "ort": 2.0, "ncnn": 3.0, "torch": 3.0}, {"ncnn": 1e-6, "torch": 1e-6})]
    assert run.engines_that_ran(rows, ["openvino", "ncnn", "torch"]) == ["ncnn", "torch"]
    assert run.engines_that_ran(rows, []) == []
