"""Normalisation: BatchNormalization (inference, opset 6 spatial/is_test forms), LRN,
InstanceNormalization, LayerNormalization against the numpy references and onnxruntime."""
import numpy as np
import pytest

import fastcnn
from helpers import assert_close, rand
from oputil import node, onnx_vs_ort, run_op
from reference import batchnorm, instancenorm, layernorm, lrn

RNG = np.random.default_rng(99)


def bn_params(c):
    return {"scale": rand(RNG, c, lo=0.5, hi=2), "bias": rand(RNG, c),
            "mean": rand(RNG, c), "var": rand(RNG, c, lo=0.1, hi=3)}


@pytest.mark.parametrize("shape", [(3, 13), (3, 13, 7), (3, 13, 3, 5), (2, 13, 3, 4, 2), (3, 13, 33, 35)])
def test_batchnorm(shape, threads):
    x = rand(RNG, *shape, lo=-3, hi=3)
    p = bn_params(shape[1])
    got = run_op("BatchNormalization", {"x": x}, {"epsilon": 1e-3}, consts=p,
                 order=["x", "scale", "bias", "mean", "var"], threads=threads)[0]
    assert_close(got, batchnorm(x, p["scale"], p["bias"], p["mean"], p["var"], 1e-3))


def test_batchnorm_layouts_and_nan(layout):
    x = rand(RNG, 3, 13, 3, 5)
    x[1, 2, 0, 0] = np.nan
    p = bn_params(13)
    got = run_op("BatchNormalization", {"x": x}, consts=p, order=["x", "scale", "bias", "mean", "var"],
                 layout=layout)[0]
    assert np.isnan(got[1, 2, 0, 0])
    assert_close(got, batchnorm(x, p["scale"], p["bias"], p["mean"], p["var"]))


@pytest.mark.parametrize("opset,attrs", [(6, {"is_test": 1, "spatial": 1}), (6, {"is_test": 1}), (7, {"spatial": 1}),
                                         (9, {"momentum": 0.8}), (15, {"epsilon": 1e-2})])
def test_batchnorm_opsets_vs_onnxruntime(opset, attrs):
    x = rand(RNG, 3, 13, 3, 5)
    p = bn_params(13)
    n = node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], **attrs)
    if opset < 7:   # onnxruntime has no BatchNormalization-6 kernel: compare with the reference
        from helpers import onnx_model, run_fastcnn_onnx
        got = run_fastcnn_onnx(onnx_model([n], {"x": x.shape}, ["y"], p, opset=opset), {"x": x})
        ref = [batchnorm(x, p["scale"], p["bias"], p["mean"], p["var"], attrs.get("epsilon", 1e-5))]
    else:
        got, ref = onnx_vs_ort(n, {"x": x}, p, opset=opset)
    assert_close(got[0], ref[0])


def test_batchnorm_opset6_spatial0_is_unsupported():
    from helpers import onnx_model, run_fastcnn_onnx
    x = rand(RNG, 3, 13, 3, 5)
    n = node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], is_test=1, spatial=0)
    with pytest.raises(fastcnn.UnsupportedOpError, match=r"spatial=0"):
        run_fastcnn_onnx(onnx_model([n], {"x": x.shape}, ["y"], bn_params(13), opset=6), {"x": x})


def test_batchnorm_statistics_at_run_time_is_unsupported():
    x = rand(RNG, 3, 13, 3, 5)
    p = bn_params(13)
    mean = p.pop("mean")
    with pytest.raises(fastcnn.UnsupportedOpError, match=r"\(BatchNormalization\): BatchNormalization with statistics computed at run time"):
        run_op("BatchNormalization", {"x": x, "mean": mean}, consts=p, order=["x", "scale", "bias", "mean", "var"])


def test_batchnorm_parameter_shape_mismatch():
    x = rand(RNG, 3, 13, 3, 5)
    p = bn_params(13)
    p["var"] = rand(RNG, 12, lo=0.1)
    with pytest.raises(fastcnn.GraphError, match=r"'var' has shape \[12\]; expected \[13\] \(one per channel\)"):
        run_op("BatchNormalization", {"x": x}, consts=p, order=["x", "scale", "bias", "mean", "var"])


def test_batchnorm_training_mode_is_unsupported():
    x = rand(RNG, 3, 13, 3, 5)
    with pytest.raises(fastcnn.UnsupportedOpError, match=r"training_mode=1"):
        run_op("BatchNormalization", {"x": x}, {"training_mode": 1}, consts=bn_params(13),
               order=["x", "scale", "bias", "mean", "var"])


# ---------------------------------------------------------------------- LRN
@pytest.mark.parametrize("size", [1, 2, 3, 5, 13, 20])
def test_lrn(size, threads):
    x = rand(RNG, 3, 13, 3, 5, lo=-3, hi=3)
    attrs = {"size": size, "alpha": 1e-2, "beta": 0.6, "bias": 1.5}
    got = run_op("LRN", {"x": x}, attrs, threads=threads)[0]
    assert_close(got, lrn(x, size, 1e-2, 0.6, 1.5))


@pytest.mark.parametrize("size", [1, 3, 5])   # onnxruntime takes odd sizes only
def test_lrn_vs_onnxruntime(size):
    x = rand(RNG, 3, 13, 3, 5, lo=-3, hi=3)
    got, ref = onnx_vs_ort(node("LRN", ["x"], size=size, alpha=0.05, beta=0.75, bias=2.0), {"x": x}, opset=13)
    assert_close(got[0], ref[0])


def test_lrn_large_and_layouts(layout, threads):
    x = rand(RNG, 3, 13, 33, 35)
    got = run_op("LRN", {"x": x}, {"size": 5}, threads=threads, layout=layout)[0]
    assert_close(got, lrn(x, 5))


def test_lrn_size_zero_is_refused():
    with pytest.raises(fastcnn.GraphError, match=r"node 'lrn0' \(LRN\): size must be >= 1, got 0"):
        run_op("LRN", {"x": rand(RNG, 1, 3, 2, 2)}, {"size": 0})


# ---------------------------------------------------------------------- InstanceNormalization
@pytest.mark.parametrize("shape", [(3, 13, 3, 5), (3, 13, 7), (2, 4, 1, 1), (3, 13, 33, 35)])
def test_instancenorm(shape, threads):
    x = rand(RNG, *shape, lo=-2, hi=4)
    s, b = rand(RNG, shape[1]), rand(RNG, shape[1])
    got = run_op("InstanceNormalization", {"x": x}, {"epsilon": 1e-4}, consts={"s": s, "b": b},
                 threads=threads)[0]
    assert_close(got, instancenorm(x, s, b, 1e-4))


def test_instancenorm_vs_onnxruntime(layout):
    x = rand(RNG, 3, 13, 3, 5, lo=-2, hi=4)
    s, b = rand(RNG, 13), rand(RNG, 13)
    got, ref = onnx_vs_ort(node("InstanceNormalization", ["x", "s", "b"], epsilon=1e-5), {"x": x},
                           {"s": s, "b": b}, opset=6)
    assert_close(got[0], ref[0])
    assert_close(run_op("InstanceNormalization", {"x": x}, consts={"s": s, "b": b}, layout=layout)[0],
                 instancenorm(x, s, b))


def test_instancenorm_needs_spatial_dims():
    with pytest.raises(fastcnn.GraphError, match=r"must be \(N, C, spatial...\), got \[3, 13\]"):
        run_op("InstanceNormalization", {"x": rand(RNG, 3, 13)}, consts={"s": rand(RNG, 13), "b": rand(RNG, 13)})


# ---------------------------------------------------------------------- LayerNormalization
@pytest.mark.parametrize("axis", [-1, -2, 1, 3])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layernorm(axis, with_bias, threads):
    x = rand(RNG, 3, 13, 3, 5, lo=-2, hi=3)
    norm_shape = x.shape[axis % 4:]
    s = rand(RNG, *norm_shape)
    consts = {"s": s}
    b = None
    if with_bias:
        b = rand(RNG, *norm_shape)
        consts["b"] = b
    got = run_op("LayerNormalization", {"x": x}, {"axis": axis, "epsilon": 1e-3}, consts=consts,
                 threads=threads)[0]
    assert_close(got, layernorm(x, s, b, axis, 1e-3))


def test_layernorm_broadcast_scale_and_ort():
    x = rand(RNG, 3, 13, 3, 5)
    s, b = rand(RNG, 5), rand(RNG, 1, 5)   # broadcast over the normalised (3, 5)
    got = run_op("LayerNormalization", {"x": x}, {"axis": 2}, consts={"s": s, "b": b})[0]
    assert_close(got, layernorm(x, s, b, 2))
    s2, b2 = rand(RNG, 3, 5), rand(RNG, 3, 5)
    got, ref = onnx_vs_ort(node("LayerNormalization", ["x", "s", "b"], axis=2), {"x": x}, {"s": s2, "b": b2}, opset=17)
    assert_close(got[0], ref[0])


def test_layernorm_bad_scale_shape():
    with pytest.raises(fastcnn.GraphError, match=r"'s' shape \[4\] does not broadcast to \[3, 5\]|cannot be broadcast"):
        run_op("LayerNormalization", {"x": rand(RNG, 3, 13, 3, 5)}, {"axis": 2}, consts={"s": rand(RNG, 4)})


def test_layernorm_bad_axis():
    with pytest.raises(fastcnn.GraphError, match=r"axis=4 is out of range for rank 4"):
        run_op("LayerNormalization", {"x": rand(RNG, 3, 13, 3, 5)}, {"axis": 4}, consts={"s": rand(RNG, 5)})
