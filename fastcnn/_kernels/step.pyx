"""Step base class and the executor loop.

A plan is a list of `Step` objects whose buffers (typed memoryviews into the plan's arena) were
bound when the plan was built. Running the plan is a loop of C-level virtual calls; each step
releases the GIL around its own computation.
"""
from time import perf_counter


cdef class Step:
    def __init__(self, str name="", int num_threads=1):
        self.name = name
        self.num_threads = num_threads

    cdef void run(self) noexcept:
        pass

    def __call__(self):
        """Run this one step (tests and profiling)."""
        self.run()


def run_steps(list steps):
    """Run every step in order. `steps` holds only `Step` instances (checked when the plan is built)."""
    cdef Step step
    for step in steps:
        step.run()


def run_steps_timed(list steps, double[::1] seconds):
    """Run every step in order, adding each step's wall time to `seconds[i]` (len(steps),)."""
    cdef Step step
    cdef Py_ssize_t i = 0
    cdef double t0
    for step in steps:
        t0 = perf_counter()
        step.run()
        seconds[i] += perf_counter() - t0
        i += 1


def set_step_threads(list steps, int num_threads):
    """Change the thread count of every step (the plan keeps its buffers)."""
    cdef Step step
    for step in steps:
        step.num_threads = num_threads
