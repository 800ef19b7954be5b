"""Makes `oputil` importable from the op tests and offers the `layout` fixture."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["C", "F", "strided"])
def layout(request):
    """Memory layout of the arrays fed to Model.run: C-contiguous, Fortran order, or a view
    with a step of 2 along the last axis."""
    return request.param
