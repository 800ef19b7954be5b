"""OpenMP may give a parallel region fewer threads than a step asks for (OMP_THREAD_LIMIT,
OMP_DYNAMIC on a busy machine): every step must still compute all of its output, and the parts of
a split batch must all run. Checked in a child interpreter started with OMP_THREAD_LIMIT=1 (read
once, when libgomp starts), against the same computation on one thread."""
import os

from helpers import fastcnn_env, run_isolated

CHILD = """
    import numpy as np
    from fastcnn._kernels import winograd
    from helpers import assert_close, ir_model

    rng = np.random.default_rng(5)
    # Winograd layers of one or two blocks, where each thread took a range of output channels
    # by its thread id (the edge CNN's 32->64 at 16x16 and 64->128 at 8x8, F(4,3) and F(2,3)):
    # with one thread in the team, half of the channels were never computed
    for n, c_in, c_out, hw, m in [(1, 32, 64, 16, 4), (1, 64, 128, 8, 2), (3, 16, 40, 9, 4)]:
        x = rng.standard_normal((n, c_in, hw, hw)).astype(np.float32)
        w = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(np.float32)
        b = rng.standard_normal(c_out).astype(np.float32)
        outs = []
        for threads in (1, 2):
            out = np.full((n, c_out, hw, hw), np.nan, np.float32)
            winograd.conv2d_winograd(x, w, b, out, (1, 1), m, num_threads=threads)
            outs.append(out)
        assert np.array_equal(outs[0], outs[1]), (n, c_in, c_out, hw, m)

    # a small CNN at batch 1 (layers split over threads) and batch 6 (one part per thread)
    c = 32
    inits = {"w1": rng.standard_normal((c, 3, 3, 3)).astype(np.float32) / 5,
             "w2": rng.standard_normal((2 * c, c, 3, 3)).astype(np.float32) / 17,
             "wd": rng.standard_normal((10, 2 * c)).astype(np.float32) / 8}
    nodes = [("Conv", ["x", "w1"], ["a"], {"pads": [1, 1, 1, 1]}), ("Relu", ["a"], ["r"]),
             ("MaxPool", ["r"], ["p"], {"kernel_shape": [2, 2], "strides": [2, 2]}),
             ("Conv", ["p", "w2"], ["b"], {"pads": [1, 1, 1, 1]}), ("Relu", ["b"], ["s"]),
             ("GlobalAveragePool", ["s"], ["g"]), ("Flatten", ["g"], ["f"]),
             ("Gemm", ["f", "wd"], ["y"], {"transB": 1})]
    models = [ir_model(nodes, {"x": (None, 3, 32, 32)}, ["y"], inits, num_threads=t)
              for t in (1, 2)]
    for batch in (1, 6):
        x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        ref, got = (m.run(None, {"x": x})[0] for m in models)
        assert np.isfinite(got).all()
        assert_close(got, ref)
    print("ok")
"""


def test_steps_compute_everything_when_openmp_gives_fewer_threads(tmp_path):
    env = fastcnn_env(extra_paths=[os.path.dirname(os.path.dirname(os.path.abspath(__file__)))])
    env["OMP_THREAD_LIMIT"] = "1"
    r = run_isolated(CHILD, tmp_path, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-2000:] + r.stderr[-4000:]
