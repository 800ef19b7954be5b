"""Shared pytest setup: makes `tests/helpers.py` and `tests/reference.py` importable from every
test folder, and offers the `threads` fixture (each kernel test runs with 1 and 2 threads)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    return request.param
