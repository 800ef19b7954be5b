"""`save` is atomic: a process killed (SIGKILL) at any moment of a large save leaves the previous
file complete and loadable, never a torn one. A corrupt file is refused with a message naming the
checksum."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastcnn
from fastcnn.ir.graph import Graph, Node, TensorSpec

ROWS, COLS = 2048, 4096  # a 32 MB weight: a save takes long enough to be killed half-way

CHILD = r"""
import sys
import numpy as np
from fastcnn.format import fcnn
from fastcnn.ir.graph import Graph, Node, TensorSpec
path = sys.argv[1]
rows, cols = int(sys.argv[2]), int(sys.argv[3])
version = 1
while True:
    w = np.full((rows, cols), version, np.float32)
    g = Graph("big", [TensorSpec("x", (None, rows))], [TensorSpec("y", (None, cols))],
              [Node("MatMul", "mm", ["x", "w"], ["y"])], {"w": w}, {"version": version})
    fcnn.save(g, path)
    print(version, flush=True)
    version += 1
"""


def big_graph(version):
    w = np.full((ROWS, COLS), version, np.float32)
    return Graph("big", [TensorSpec("x", (None, ROWS))], [TensorSpec("y", (None, COLS))],
                 [Node("MatMul", "mm", ["x", "w"], ["y"])], {"w": w}, {"version": version})


def check_complete(path, allowed):
    """The file loads (checksum and all) and holds exactly one whole version."""
    from fastcnn.format import fcnn
    graph, res = fcnn.load(path)
    try:
        v = graph.metadata["version"]
        w = graph.initializers["w"]
        assert v in allowed, f"version {v} not in {sorted(allowed)}"
        assert w.shape == (ROWS, COLS) and w.min() == v and w.max() == v, "weights of another version"
        return v
    finally:
        del graph
        res.close()


def test_sigkill_during_save_leaves_the_previous_file(tmp_path):
    from fastcnn.format import fcnn
    path = str(tmp_path / "model.fcnn")
    fcnn.save(big_graph(0), path)
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    rng = random.Random(1234)
    seen_versions, mid_save_kills = set(), 0
    for trial in range(6):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, path, str(ROWS), str(COLS)],
                                stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        try:
            first = proc.stdout.readline()  # one whole save done: the next one is under way
            assert first.strip().isdigit(), first
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finished = [int(first)] + [int(v) for v in proc.stdout.read().split()]
        proc.stdout.close()
        # the file is the last version whose save returned, or the one being renamed in
        v = check_complete(path, {finished[-1], finished[-1] + 1})
        seen_versions.add(v)
        mid_save_kills += v == finished[-1]
    assert mid_save_kills > 0, "no kill landed during a save; the test proved nothing"
    # temporary files of killed saves stay beside the model (they are never the model)
    for name in os.listdir(tmp_path):
        assert name == "model.fcnn" or (name.startswith(".fcnn-") and name.endswith(".tmp")), name


def test_failed_save_leaves_the_previous_file(tmp_path):
    """A save that fails half-way (here: the metadata is not JSON data) changes nothing."""
    from fastcnn.format import fcnn
    path = str(tmp_path / "model.fcnn")
    fcnn.save(big_graph(3), path)
    bad = big_graph(4)
    bad.metadata["oops"] = object()
    with pytest.raises(fastcnn.ModelFileError, match="not JSON data"):
        fcnn.save(bad, path)
    assert check_complete(path, {3}) == 3
    assert os.listdir(tmp_path) == ["model.fcnn"]


def test_save_into_a_missing_or_read_only_folder_is_a_clear_error(tmp_path):
    from fastcnn.format import fcnn
    with pytest.raises(fastcnn.ModelFileError, match="cannot write"):
        fcnn.save(big_graph(1), str(tmp_path / "no" / "such" / "m.fcnn"))
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(fastcnn.ModelFileError, match="cannot write"):
            fcnn.save(big_graph(1), str(ro / "m.fcnn"))


def test_checksum_mismatch_is_refused_with_a_message_saying_so(tmp_path):
    from fastcnn.format import fcnn
    path = tmp_path / "m.fcnn"
    fcnn.save(big_graph(2), str(path))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(fastcnn.ModelFileError, match=r"checksum mismatch \(stored 0x[0-9a-f]{8}, "
                                                    r"computed 0x[0-9a-f]{8}\): the file is corrupt"):
        fastcnn.load(str(path))


def test_closed_model_cannot_be_saved(tmp_path):
    """Saving after close() would write a model without its nodes and weights: refused."""
    from helpers import ir_model
    m = ir_model([("Relu", ["x"], ["y"])], {"x": (None, 3)}, ["y"])
    m.save(tmp_path / "ok.fcnn")
    m.close()
    with pytest.raises(fastcnn.FastCNNError, match="closed"):
        m.save(tmp_path / "after.fcnn")
    assert not (tmp_path / "after.fcnn").exists()
