"""Resize (and Upsample/Resize-10 through the importer): every mode, nearest_mode and
coordinate_transformation_mode against the numpy reference (exactly representable scales, so
float32 and float64 coordinates agree) and against onnxruntime at opsets 7 to 19 (any scales,
including ones whose half-way points land an ulp off in float32); scales or sizes, constant or
computed from shapes with a dynamic batch; axes and keep_aspect_ratio_policy; tf_crop_and_resize
with roi and extrapolation_value; validation errors."""
import itertools

import numpy as np
import pytest

import fastcnn
from helpers import assert_close, onnx_model, rand, run_fastcnn_onnx, run_ort
from oputil import run_op
from reference import resize, resize_output

RNG = np.random.default_rng(1919)
onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402

COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
          "tf_half_pixel_for_nn", "tf_crop_and_resize"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "floor_up_ceil_down"]
MODES = ([("nearest", nm, 0) for nm in NEAREST] + [("linear", "round_prefer_floor", 0)] +
         [("cubic", "round_prefer_floor", e) for e in (0, 1)])
ROI = [0.0, 0.0, 0.25, -0.125, 1.0, 1.0, 0.875, 1.25]     # dyadic: exact in float32
# (scales or sizes over (N, C, H, W) of a (2, 3, 4, 8) input): dyadic ratios only
GEOMETRIES = [("scales", [1, 1, 2.0, 2.0]), ("scales", [1, 1, 0.5, 0.25]), ("scales", [1, 1, 1.5, 2.5]),
              ("scales", [1, 1, 0.75, 3.0]), ("sizes", [2, 3, 6, 3]), ("sizes", [2, 3, 1, 8]),
              ("sizes", [2, 3, 16, 1])]


def resize_inputs(kind, values, roi=None):
    """(IR input order, consts) for a Resize node."""
    consts = {kind: np.array(values, np.float32 if kind == "scales" else np.int64)}
    if roi is not None:
        consts["roi"] = np.array(roi, np.float32)
    order = ["x", "roi" if roi is not None else "", "scales" if kind == "scales" else ""]
    if kind == "sizes":
        order.append("sizes")
    return order, consts


def reference_for(x, kind, values, attrs, roi=None):
    out, scales = resize_output(x.shape, **{kind: values},
                                policy=attrs.get("keep_aspect_ratio_policy", "stretch"))
    return resize(x, out, scales, attrs.get("mode", "nearest"),
                  attrs.get("coordinate_transformation_mode", "half_pixel"),
                  attrs.get("nearest_mode", "round_prefer_floor"), attrs.get("cubic_coeff_a", -0.75),
                  attrs.get("exclude_outside", 0), attrs.get("extrapolation_value", 0.0), roi)


def mode_id(m):
    return f"{m[0]}-{m[1]}" if m[0] == "nearest" else f"{m[0]}{'-exclude' if m[2] else ''}"


# ---------------------------------------------------------------------- vs reference
@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: f"{g[0]}{g[1][2:]}")
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode", MODES, ids=mode_id)
def test_matches_reference(mode, coord, geo):
    x = rand(RNG, 2, 3, 4, 8, lo=-2, hi=2)
    attrs = dict(mode=mode[0], coordinate_transformation_mode=coord, nearest_mode=mode[1],
                 exclude_outside=mode[2], extrapolation_value=-3.5)
    roi = ROI if coord == "tf_crop_and_resize" else None
    order, consts = resize_inputs(*geo, roi)
    got = run_op("Resize", {"x": x}, attrs, consts=consts, order=order)[0]
    assert_close(got, reference_for(x, *geo, attrs, roi), f"{mode_id(mode)} {coord} {geo}")


def test_worked_examples():
    x = np.array([[[[1, 2], [3, 4]]]], np.float32)
    # nearest x2, asymmetric/floor (PyTorch's nearest): every pixel becomes a 2x2 block
    a = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    order, consts = resize_inputs("scales", [1, 1, 2, 2])
    y = run_op("Resize", {"x": x}, a, consts=consts, order=order)[0]
    assert y[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    # bilinear with align_corners to 3x3: the corners stay, the middle is the average
    a = {"mode": "linear", "coordinate_transformation_mode": "align_corners"}
    order, consts = resize_inputs("sizes", [1, 1, 3, 3])
    y = run_op("Resize", {"x": x}, a, consts=consts, order=order)[0]
    assert y[0, 0].tolist() == [[1, 1.5, 2], [2, 2.5, 3], [3, 3.5, 4]]


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_large_parallel_and_layouts(mode, threads, layout):
    x = rand(RNG, 3, 13, 17, 19)
    attrs = {"mode": mode}
    order, consts = resize_inputs("scales", [1, 1, 2.5, 1.75])
    got = run_op("Resize", {"x": x}, attrs, consts=consts, order=order, threads=threads, layout=layout)[0]
    assert got.shape == (3, 13, 42, 33)
    assert_close(got, reference_for(x, "scales", [1, 1, 2.5, 1.75], attrs))


@pytest.mark.parametrize("shape,values", [((3, 5, 9), [1, 1, 2.5]), ((6, 7), [0.5, 1.5]), ((11,), [1.75])])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_other_ranks(shape, values, mode, threads):
    """Rank 3 (N, C, W) resizes W; rank 2 (H, W) both; rank 1 its only axis."""
    x = rand(RNG, *shape)
    attrs = {"mode": mode, "coordinate_transformation_mode": "pytorch_half_pixel"}
    order, consts = resize_inputs("scales", values)
    got = run_op("Resize", {"x": x}, attrs, consts=consts, order=order, threads=threads)[0]
    assert_close(got, reference_for(x, "scales", values, attrs))


def test_same_shape_is_the_input():
    x = rand(RNG, 2, 3, 5, 5)
    order, consts = resize_inputs("scales", [1, 1, 1.1, 1.1])   # floor(5 * 1.1) = 5
    m_out = run_op("Resize", {"x": x}, {"mode": "linear"}, consts=consts, order=order)[0]
    assert np.array_equal(m_out, x)


def test_nan_and_inf():
    x = rand(RNG, 1, 2, 3, 3)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 0, 0] = np.inf
    order, consts = resize_inputs("scales", [1, 1, 2, 2])
    for mode in ("nearest", "linear"):
        got = run_op("Resize", {"x": x}, {"mode": mode}, consts=consts, order=order)[0]
        ref = reference_for(x, "scales", [1, 1, 2, 2], {"mode": mode})
        assert np.isnan(got[0, 0, 2:4, 2:4]).all()
        assert_close(got, ref, mode)


# ---------------------------------------------------------------------- vs onnxruntime
def resize_model(x_shape, opset, attrs, roi=None, scales=None, sizes=None, op="Resize"):
    """An ONNX model with one Resize/Upsample node in the form `opset` uses."""
    inits, names = {}, ["x"]

    def add(name, v, dtype):
        if v is None:
            names.append("")
        else:
            inits[name] = np.asarray(v, dtype)
            names.append(name)
    if op == "Upsample":
        if opset >= 9:
            add("scales", scales, np.float32)
        else:
            attrs = dict(attrs, scales=[float(s) for s in scales])
    elif opset == 10:
        add("scales", scales, np.float32)
    else:
        add("roi", roi if roi is not None else ([] if opset == 11 else None), np.float32)
        add("scales", scales if scales is not None else ([] if opset == 11 else None), np.float32)
        if sizes is not None:
            add("sizes", sizes, np.int64)
    while names[-1] == "":
        names.pop()
    return onnx_model([helper.make_node(op, names, ["y"], **attrs)], {"x": x_shape}, ["y"], inits, opset=opset)


def check_vs_ort(model, x):
    ref = run_ort(model, {"x": x})
    got = run_fastcnn_onnx(model, {"x": x})
    assert_close(got[0], ref[0])


ORT_GEOMETRIES = [("scales", [1, 1, 2.0, 1.5]), ("scales", [1, 1, 0.6, 0.45]), ("scales", [1, 1, 1.7, 2.3]),
                  ("scales", [1, 1, 0.7, 1.43]), ("sizes", [2, 3, 9, 4]), ("sizes", [2, 3, 1, 1]),
                  ("sizes", [2, 3, 3, 13])]
ORT_COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
              "tf_crop_and_resize"]
ORT_MODES = [m for m in MODES if m[1] != "floor_up_ceil_down"]


@pytest.mark.parametrize("coord", ORT_COORDS)
@pytest.mark.parametrize("mode", ORT_MODES, ids=mode_id)
def test_opset19_vs_onnxruntime(mode, coord):
    x = rand(RNG, 2, 3, 5, 7)
    attrs = dict(mode=mode[0], coordinate_transformation_mode=coord, nearest_mode=mode[1],
                 exclude_outside=mode[2], extrapolation_value=-7.0)
    roi = [0, 0, 0.2, 0.1, 1, 1, 0.9, 1.2] if coord == "tf_crop_and_resize" else None
    for kind, values in ORT_GEOMETRIES:
        check_vs_ort(resize_model(x.shape, 19, attrs, roi=roi, **{kind: values}), x)


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_earlier_opsets_vs_onnxruntime(opset, mode):
    x = rand(RNG, 2, 3, 5, 7)
    coords = ORT_COORDS[:1] + ORT_COORDS[2:] + (["tf_half_pixel_for_nn"] if opset == 11 else [])
    for coord, nm in itertools.product(coords, NEAREST[:4] if mode == "nearest" else NEAREST[:1]):
        attrs = dict(mode=mode, coordinate_transformation_mode=coord, nearest_mode=nm)
        roi = [0, 0, 0.2, 0.1, 1, 1, 0.9, 1.2] if coord == "tf_crop_and_resize" else None
        for kind, values in ORT_GEOMETRIES[::2]:
            check_vs_ort(resize_model(x.shape, opset, attrs, roi=roi, **{kind: values}), x)


def test_defaults_vs_onnxruntime():
    """No attributes at all: nearest, half_pixel, round_prefer_floor."""
    x = rand(RNG, 2, 3, 5, 7)
    for kind, values in ORT_GEOMETRIES:
        check_vs_ort(resize_model(x.shape, 13, {}, **{kind: values}), x)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_random_scales_vs_onnxruntime(mode):
    """Derandomized: many in/out sizes and scales, where float32 rounding puts intended
    half-way points an ulp or two off."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        h, w = rng.integers(1, 10, size=2)
        sh, sw = (float(np.float32(v)) for v in np.round(rng.uniform(0.3, 3.5, size=2), 2))
        if int(np.float32(sh) * np.float32(h)) < 1 or int(np.float32(sw) * np.float32(w)) < 1:
            continue
        coord = ["half_pixel", "asymmetric", "pytorch_half_pixel", "align_corners"][rng.integers(4)]
        nm = NEAREST[rng.integers(4)]
        x = rand(rng, 1, 2, int(h), int(w))
        attrs = dict(mode=mode, coordinate_transformation_mode=coord, nearest_mode=nm)
        check_vs_ort(resize_model(x.shape, 13, attrs, scales=[1, 1, sh, sw]), x)
        oh, ow = (int(v) for v in rng.integers(1, 14, size=2))
        check_vs_ort(resize_model(x.shape, 13, attrs, sizes=[1, 2, oh, ow]), x)


@pytest.mark.parametrize("op,opset,mode,scales", [
    ("Upsample", 7, "nearest", [1, 1, 2, 3]), ("Upsample", 7, "linear", [1, 1, 3, 2]),
    ("Upsample", 9, "nearest", [1, 1, 2, 1.5]), ("Upsample", 9, "linear", [1, 1, 2, 1.5]),
    ("Resize", 10, "nearest", [1, 1, 2, 1.5]), ("Resize", 10, "nearest", [1, 1, 0.6, 0.45]),
    ("Resize", 10, "nearest", [1, 1, 1.4, 0.45]), ("Resize", 10, "linear", [1, 1, 0.6, 1.5]),
])
def test_legacy_forms_vs_onnxruntime(op, opset, mode, scales):
    """Upsample-7/9 and Resize-10 sample at x_out / scale and truncate when upsampling, round up
    when downsampling, axis by axis (the last-but-one case mixes both)."""
    x = rand(RNG, 2, 3, 5, 7)
    check_vs_ort(resize_model(x.shape, opset, {"mode": mode}, scales=scales, op=op), x)


def test_upsample_opset1_height_width_scales():
    x = rand(RNG, 1, 2, 3, 4)
    model = onnx_model([helper.make_node("Upsample", ["x"], ["y"], height_scale=2.0, width_scale=3.0,
                                         mode="nearest")], {"x": x.shape}, ["y"], opset=1)
    got = run_fastcnn_onnx(model, {"x": x})[0]
    assert_close(got, np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("axes", [None, [2, 3], [-1, -2], [3]])
def test_axes_and_keep_aspect_ratio(policy, axes):
    x = rand(RNG, 2, 3, 5, 7)
    attrs = {"mode": "linear", "keep_aspect_ratio_policy": policy}
    sizes = [2, 3, 9, 4]
    if axes is not None:
        attrs["axes"] = axes
        sizes = [[2, 3, 9, 4][a] for a in axes]
    order, consts = resize_inputs("sizes", sizes)
    if axes is None and policy != "stretch":
        # one scale for every axis resizes N and C too (onnxruntime refuses it as well)
        with pytest.raises(fastcnn.UnsupportedOpError, match=r"resizing axis 0 \(2 -> [14],"):
            run_op("Resize", {"x": x}, attrs, consts=consts, order=order)
        return
    got = run_op("Resize", {"x": x}, attrs, consts=consts, order=order)[0]
    out, scales = resize_output(x.shape, sizes=sizes, axes=axes, policy=policy)
    assert list(got.shape) == out
    assert_close(got, resize(x, out, scales, "linear"))
    if policy == "stretch" or min(axes) >= 0:
        # (onnxruntime 1.32 ignores negative axes when it applies a policy)
        check_vs_ort(resize_model(x.shape, 18, attrs, sizes=sizes), x)
    if axes is not None and policy == "stretch":   # onnxruntime refuses a policy with scales
        check_vs_ort(resize_model(x.shape, 18, attrs, scales=[[1, 1, 1.5, 0.75][a] for a in axes]), x)


def test_tf_crop_and_resize_with_axes_vs_onnxruntime():
    x = rand(RNG, 1, 2, 6, 6)
    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "axes": [3, 2],
             "extrapolation_value": 9.0}
    check_vs_ort(resize_model(x.shape, 18, attrs, roi=[-0.2, 0.1, 0.8, 1.3], sizes=[5, 4]), x)


# ---------------------------------------------------------------------- sizes from shapes
def pytorch_interpolate_size(opset):
    """What torch.onnx.export writes for F.interpolate(x, size=(2*H, W + 3)) with a dynamic
    batch: sizes = Concat(Shape(x)[0:2], [2H, W + 3]) computed from the input's shape."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "two"], ["nc"]),
        helper.make_node("Gather", ["shape", "two_s"], ["h"], axis=0),
        helper.make_node("Gather", ["shape", "three_s"], ["w"], axis=0),
        helper.make_node("Mul", ["h", "two_s"], ["h2"]),
        helper.make_node("Add", ["w", "three_s"], ["w3"]),
        helper.make_node("Unsqueeze", ["h2", "zero"], ["h2u"]),
        helper.make_node("Unsqueeze", ["w3", "zero"], ["w3u"]),
        helper.make_node("Concat", ["nc", "h2u", "w3u"], ["sizes"], axis=0),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                         coordinate_transformation_mode="pytorch_half_pixel"),
    ]
    inits = {"zero": np.array([0], np.int64), "two": np.array([2], np.int64),
             "two_s": np.array(2, np.int64), "three_s": np.array(3, np.int64)}
    return onnx_model(nodes, {"x": (None, 3, 5, 6)}, ["y"], inits, opset=opset)


@pytest.mark.parametrize("batch", [1, 3])
def test_sizes_computed_from_shape_with_dynamic_batch(batch):
    model = pytorch_interpolate_size(13)
    x = rand(RNG, batch, 3, 5, 6)
    ref = run_ort(model, {"x": x})
    got = run_fastcnn_onnx(model, {"x": x})
    assert got[0].shape == (batch, 3, 10, 9)
    assert_close(got[0], ref[0])


@pytest.mark.parametrize("batch", [1, 3])
def test_scales_computed_from_shape(batch):
    """Resize-10 as exported by torch 1.x for interpolate(size=...): scales = sizes / shape."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=1),
        helper.make_node("Div", ["target", "shape_f"], ["ratio"]),
        helper.make_node("Concat", ["ones", "ratio_hw"], ["scales"], axis=0),
        helper.make_node("Slice", ["ratio", "two", "four"], ["ratio_hw"]),
        helper.make_node("Resize", ["x", "scales"], ["y"], mode="nearest"),
    ]
    nodes = nodes[:3] + [nodes[4], nodes[3], nodes[5]]
    inits = {"target": np.array([1, 1, 10, 3], np.float32), "ones": np.array([1, 1], np.float32),
             "two": np.array([2], np.int64), "four": np.array([4], np.int64)}
    model = onnx_model(nodes, {"x": (None, 2, 5, 6)}, ["y"], inits, opset=10)
    x = rand(RNG, batch, 2, 5, 6)
    got = run_fastcnn_onnx(model, {"x": x})
    assert got[0].shape == (batch, 2, 10, 3)
    assert_close(got[0], run_ort(model, {"x": x})[0])


# ---------------------------------------------------------------------- validation
BAD = [
    ({}, ["x", "", "scales", "sizes"], {"scales": np.array([1, 1, 2, 2], np.float32), "sizes": np.array([1, 2, 6, 8], np.int64)},
     fastcnn.GraphError, r"exactly one of the inputs scales and sizes"),
    ({}, ["x"], {}, fastcnn.GraphError, r"exactly one of the inputs scales and sizes"),
    ({}, ["x", "", "scales"], {"scales": np.array([1, 1, 2], np.float32)}, fastcnn.GraphError,
     r"scales \[1.0, 1.0, 2.0\] must hold 4 values"),
    ({}, ["x", "", "scales"], {"scales": np.array([1, 1, -2, 2], np.float32)}, fastcnn.GraphError,
     r"scales \[1.0, 1.0, -2.0, 2.0\] must be positive and finite"),
    ({}, ["x", "", "scales"], {"scales": np.array([1, 2, 2, 2], np.float32)}, fastcnn.UnsupportedOpError,
     r"resizing axis 1 \(2 -> 4, scale 2\): fastcnn resizes only the last two axes"),
    ({}, ["x", "", "", "sizes"], {"sizes": np.array([2, 2, 6, 8], np.int64)}, fastcnn.UnsupportedOpError,
     r"resizing axis 0 \(1 -> 2"),
    ({"mode": "bicubic"}, ["x", "", "scales"], {"scales": np.array([1, 1, 2, 2], np.float32)}, fastcnn.GraphError,
     r"mode must be one of nearest, linear, cubic, got 'bicubic'"),
    ({"exclude_outside": 1}, ["x", "", "scales"], {"scales": np.array([1, 1, 2, 2], np.float32)}, fastcnn.GraphError,
     r"exclude_outside=1 applies to mode 'cubic' only"),
    ({"coordinate_transformation_mode": "tf_crop_and_resize"}, ["x", "", "scales"],
     {"scales": np.array([1, 1, 2, 2], np.float32)}, fastcnn.GraphError, r"tf_crop_and_resize needs roi with 8 float values"),
    ({"axes": [2, 2]}, ["x", "", "scales"], {"scales": np.array([2, 2], np.float32)}, fastcnn.GraphError,
     r"axes \[2, 2\] repeat an axis"),
    ({}, ["x", "", "", "sizes"], {"sizes": np.array([1, 2, 6.5, 8], np.float32)}, fastcnn.GraphError,
     r"sizes must be integers"),
]


@pytest.mark.parametrize("attrs,order,consts,error,msg", BAD, ids=[b[4][:32] for b in BAD])
def test_invalid_inputs_are_refused(attrs, order, consts, error, msg):
    with pytest.raises(error, match=r"node 'resize0' \(Resize\): " + msg):
        run_op("Resize", {"x": rand(RNG, 1, 2, 3, 4)}, attrs, consts=consts, order=order)


def test_scales_known_only_at_run_time_are_refused():
    with pytest.raises(fastcnn.UnsupportedOpError, match=r"input 2 \('s'\) \(scales\) must be a constant"):
        run_op("Resize", {"x": rand(RNG, 1, 2, 3, 4), "s": np.ones(4, np.float32)}, order=["x", "", "s"])


def test_antialias_is_refused_at_import():
    model = resize_model((1, 2, 6, 6), 18, {"mode": "linear", "antialias": 1}, scales=[1, 1, 0.5, 0.5])
    with pytest.raises(fastcnn.UnsupportedOpError, match=r"antialias=1"):
        run_fastcnn_onnx(model, {"x": rand(RNG, 1, 2, 6, 6)})


def test_step_refuses_out_of_range_tables():
    from fastcnn._kernels.resize import ResizeStep
    x, out = rand(RNG, 2, 3, 4), np.empty((2, 5, 6), np.float32)
    ok_h = (np.zeros((5, 1), np.int64), np.ones((5, 1), np.float32), np.ones(5, np.uint8))
    bad_w = (np.full((6, 1), 4, np.int64), np.ones((6, 1), np.float32), np.ones(6, np.uint8))
    with pytest.raises(ValueError, match=r"idx_w outside \[0, 4\)"):
        ResizeStep(x, out, *ok_h, *bad_w)
    with pytest.raises(ValueError, match=r"idx_h must be \(5, 1..4\)"):
        ResizeStep(x, out, np.zeros((4, 1), np.int64), np.ones((4, 1), np.float32), np.ones(4, np.uint8),
                   *bad_w)


@pytest.mark.parametrize("scales", [[1, 1, 1, 1.1], [1, 1, 2, 2]], ids=["same_shape", "upsampled"])
def test_constant_input(scales):
    """A learned map resized while planning its use (Resize has no folder: it runs, and an
    unchanged shape is a copy rather than a view of the constant)."""
    from helpers import ir_model
    c = rand(RNG, 2, 3, 4, 5)
    out, sc = resize_output(c.shape, scales=scales)
    m = ir_model([("Resize", ["c", "", "s"], ["r"], {"mode": "linear"}), ("Add", ["x", "r"], ["y"], {})],
                 {"x": tuple(out)}, ["y"], {"c": c, "s": np.array(scales, np.float32)})
    x = rand(RNG, *out)
    assert_close(m.run(None, {"x": x})[0], x + resize(c, out, sc, "linear"))


def test_absurd_sizes_are_refused_without_allocating():
    order, consts = resize_inputs("scales", [1, 1, 1e30, 1e30])
    with pytest.raises(fastcnn.FastCNNError, match=r"\(Resize\)"):
        run_op("Resize", {"x": rand(RNG, 1, 1, 2, 2)}, consts=consts, order=order)
    order, consts = resize_inputs("sizes", [1, 1, 1, 200_000_000])
    old = fastcnn.config._memory_limit      # None unless a test or the user set one
    fastcnn.set_memory_limit(1 << 30)
    try:
        with pytest.raises(fastcnn.ResourceLimitError, match=r"\(Resize\): its tap tables"):
            run_op("Resize", {"x": rand(RNG, 1, 1, 1, 2)}, {"mode": "cubic"}, consts=consts, order=order)
    finally:
        fastcnn.set_memory_limit(old)


@pytest.mark.parametrize("op,opset,inputs,msg", [
    ("Resize", 10, ["x"], r"Resize-10 takes X and scales, got 1 inputs"),
    ("Upsample", 9, ["x"], r"Upsample needs scales"),
])
def test_malformed_legacy_nodes_are_refused(op, opset, inputs, msg):
    model = onnx_model([helper.make_node(op, inputs, ["y"], mode="nearest")], {"x": (1, 2, 3, 3)}, ["y"], opset=opset)
    with pytest.raises(fastcnn.ModelFileError, match=msg):
        run_fastcnn_onnx(model, {"x": rand(RNG, 1, 2, 3, 3)})
