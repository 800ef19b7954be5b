"""The operator table is complete: every op has a shape function and either a runtime kernel or
a folder, every runtime kernel belongs to a known op, and every op is exercised by a test here."""
import glob
import os
import re

from fastcnn.ir.ops import OPS
from fastcnn.runtime.kernels import KERNELS

# Ops that have a folder but no kernel: shape arithmetic and comparisons, evaluated while
# planning only (a comparison of float tensors runs inside the Where it is fused into).
FOLD_ONLY = {"Mod", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor",
             "Not", "Shape", "Size", "ConstantOfShape", "Range", "NonZero"}
# Tested by the conv/dense developer's own suites (tests/runtime, tests/kernels), not here.
TESTED_ELSEWHERE = {"Conv", "Gemm", "MatMul"}


def test_every_op_has_a_kernel_or_a_folder():
    for op, spec in OPS.items():
        assert callable(spec.infer), op
        if op in KERNELS:
            continue
        assert spec.fold is not None, f"{op} has neither a kernel nor a folder"
        assert op in FOLD_ONLY, f"{op} is fold-only but not listed as such"
    assert set(KERNELS) <= set(OPS), sorted(set(KERNELS) - set(OPS))
    assert FOLD_ONLY.isdisjoint(KERNELS)


def test_every_op_is_tested():
    here = os.path.dirname(os.path.abspath(__file__))
    text = ""
    for path in glob.glob(os.path.join(here, "test_*.py")) + glob.glob(os.path.join(here, "..", "importers", "test_*.py")):
        if os.path.basename(path) != "test_op_table.py":
            text += open(path).read()
    untested = [op for op in OPS if op not in TESTED_ELSEWHERE and not re.search(rf'"{op}"', text)]
    assert not untested, f"operators without a test: {untested}"
