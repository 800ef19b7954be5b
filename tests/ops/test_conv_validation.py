"""Conv attribute validation lives in the shape function (fastcnn/ir/shapes.py): bad values
raise GraphError naming the node and the values, before any kernel is chosen."""
import numpy as np
import pytest

import fastcnn
from oputil import run_op


def _conv_error(x_shape, w_shape, attrs, match):
    x = np.zeros(x_shape, np.float32)
    w = np.zeros(w_shape, np.float32)
    with pytest.raises(fastcnn.GraphError, match=match) as e:
        run_op("Conv", {"x": x}, attrs, consts={"w": w})
    assert "node 'conv0' (Conv)" in str(e.value)


def test_group_not_dividing_channels():
    _conv_error((1, 6, 5, 5), (4, 3, 3, 3), {"group": 4},
                r"input 'x' has 6 channels but weight 'w' \[4, 3, 3, 3\] with group=4 expects 12")


def test_output_channels_not_divisible_by_group():
    _conv_error((1, 6, 5, 5), (5, 3, 3, 3), {"group": 2}, r"output channels 5 are not divisible by group=2")


def test_group_zero():
    _conv_error((1, 6, 5, 5), (4, 6, 3, 3), {"group": 0}, r"group must be >= 1, got 0")


def test_stride_zero_and_negative_pads():
    _conv_error((1, 3, 5, 5), (4, 3, 3, 3), {"strides": [1, 0]}, r"strides \[1, 0\] must hold values >= 1")
    _conv_error((1, 3, 5, 5), (4, 3, 3, 3), {"pads": [0, -1, 0, 0]}, r"pads \[0, -1, 0, 0\] must hold values >= 0")


def test_kernel_larger_than_padded_input():
    _conv_error((1, 3, 2, 5), (4, 3, 3, 3), {}, r"kernel \[3, 3\].*larger than the padded input: spatial dims \[2, 5\]")


def test_kernel_shape_attribute_disagrees_with_weights():
    _conv_error((1, 3, 5, 5), (4, 3, 3, 3), {"kernel_shape": [2, 2]}, r"kernel_shape \[2, 2\] does not match weight shape \[4, 3, 3, 3\]")


def test_weight_rank_mismatch():
    _conv_error((1, 3, 5, 5), (4, 3, 3), {}, r"weight 'w' has rank 3 shape \[4, 3, 3\]; expected rank 4")
