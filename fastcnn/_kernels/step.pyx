"""Step base class and the executor loop.

A plan is a list of `Step` objects whose buffers (typed memoryviews into the plan's arena) were
bound when the plan was built. Running the plan is a loop of C-level virtual calls; each step
releases the GIL around its own computation.
"""
from cython.parallel cimport parallel, threadid
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


def run_on_threads(list fns):
    """Call each of fns (callables taking no argument) once, fns[i] on OpenMP thread i, thread 0
    being the caller, and return when all have returned; an exception raised by one is raised
    here after all have finished (the first one's). Functions OpenMP gave no thread run on the
    caller afterwards. Each function holds the GIL but while a step computes (the steps release
    it), so the parts of a batch run at once (Model.run): OpenMP's workers are awake between
    calls (GOMP_SPINCOUNT, config.py), where waking a Python worker thread took 30 us and more."""
    cdef int n = len(fns), tid
    if n == 0:
        return
    done = [False] * n
    errors = [None] * n

    def call(i):
        done[i] = True
        try:
            fns[i]()
        except BaseException as e:
            errors[i] = e

    with nogil, parallel(num_threads=n):
        tid = threadid()
        with gil:
            if tid < n:
                call(tid)
    for i in range(n):
        if not done[i]:
            call(i)
    for e in errors:
        if e is not None:
            raise e
