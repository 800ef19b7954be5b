"""Property test: any JSON value in any attribute of any operator is either accepted (and the model
then runs) or refused with a FastCNNError, in a worker process (a crash fails the test). This
reaches the attribute schema checks and every shape function with values no seed file holds."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fuzz_runner
from fuzz_mutators import ATTR_NAMES, INTERESTING_FLOATS, INTERESTING_INTS

json_scalars = st.one_of(st.sampled_from(INTERESTING_INTS), st.integers(-5, 10),
                         st.sampled_from([x for x in INTERESTING_FLOATS if x == x]),
                         st.sampled_from(["", "NOTSET", "SAME_UPPER", "VALID", "reflect", "DCR",
                                          "float64", "Relu", "tanh", "x" * 300]),
                         st.booleans(), st.none())
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=12)


def _ops():
    from fastcnn.ir.ops import OPS
    return sorted(OPS)


def fcnn_bytes(op: str, n_inputs: int, attrs: dict) -> bytes:
    """A .fcnn file: x (N, 4, 6, 6) and up to three small constant inputs feeding `op`."""
    from fastcnn.format import fcnn
    consts = [("w", "float32", [4, 4, 3, 3]), ("k", "int64", [4]), ("b", "float32", [4])]
    values = {"w": np.linspace(-1, 1, 144, dtype=np.float32), "k": np.array([1, 1, 2, 2], np.int64),
              "b": np.ones(4, np.float32)}
    ins = ["x"] + [c[0] for c in consts[:max(0, n_inputs - 1)]]
    table, relative, data = [], [], b""
    for name, dtype, shape in consts:
        raw = values[name].tobytes()
        table.append({"name": name, "dtype": dtype, "shape": shape, "offset": 0, "nbytes": len(raw)})
        relative.append(len(data))
        data += raw + b"\0" * ((-len(raw)) % 64)
    header = {"format": "fcnn", "version": 1, "producer": "test",
              "graph": {"name": "g", "inputs": [{"name": "x", "shape": [None, 4, 6, 6], "dtype": "float32"}],
                        "outputs": [{"name": "y", "shape": [], "dtype": "float32"}],
                        "nodes": [{"op": op, "name": "n", "inputs": ins, "outputs": ["y"], "attrs": attrs}]},
              "tensors": table, "metadata": {}}
    d_off = 64
    for _ in range(4):
        for t, rel in zip(table, relative):
            t["offset"] = d_off + rel
        hb = json.dumps(header).encode()
        need = (64 + len(hb) + 63) // 64 * 64
        if need == d_off:
            break
        d_off = need
    body = fcnn.PREAMBLE.pack(fcnn.MAGIC, 1, 0, 64, len(hb), d_off, len(data)) + hb
    body += b"\0" * (d_off - len(body)) + data
    return body + fcnn.TRAILER.pack(fcnn.TRAILER_MAGIC, zlib.crc32(body) & 0xFFFFFFFF, 0)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    with fuzz_runner.Runner(str(tmp_path_factory.mktemp("attr-worker"))) as r:
        yield r


def test_any_attribute_value_is_accepted_or_refused_cleanly(runner, tmp_path):
    seen = {"ok": 0, "error": 0}
    path = tmp_path / "attr-case.fcnn"

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        op = data.draw(st.sampled_from(_ops()), label="op")
        n_inputs = data.draw(st.integers(1, 4), label="inputs")
        names = data.draw(st.lists(st.sampled_from(ATTR_NAMES), max_size=3, unique=True), label="names")
        attrs = {n: data.draw(json_values, label=n) for n in names}
        path.write_bytes(fcnn_bytes(op, n_inputs, attrs))
        res = runner.run(str(path), trace=False)
        assert res.outcome in seen, f"{op} {attrs!r:.300}: {res.kind} {res.detail}\n" \
                                    f"{res.extra.get('traceback', '')}"
        seen[res.outcome] += 1

    check()
    # not vacuous: some drawn nodes are valid and run, most are refused
    assert seen["ok"] >= 10 and seen["error"] >= 100, seen
