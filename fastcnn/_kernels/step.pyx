"""Step base class and the executor loop.

A plan is a list of `Step` objects whose buffers (typed memoryviews into the plan's arena) were
bound when the plan was built. Running the plan is a loop of C-level virtual calls; each step
runs without the GIL (`StepSeq.run` releases it once for the whole sequence).
"""
from cpython.ref cimport PyObject
from cpython.sequence cimport PySequence_Fast_ITEMS
from cython.parallel cimport parallel, prange, threadid
from time import perf_counter


cdef class Step:
    def __init__(self, str name="", int num_threads=1):
        self.name = name
        self.num_threads = num_threads

    cdef void run(self) noexcept nogil:
        pass

    def __call__(self):
        """Run this one step (tests and profiling)."""
        self.run()


cdef class StepSeq:
    """A plan's steps in order, checked once when the plan is built (the nogil loops below cast
    each item to Step without a check): running them then takes no check and no allocation.
    Holds a tuple, so the sequence cannot change under a run."""
    cdef tuple steps
    cdef PyObject **items
    cdef Py_ssize_t n

    def __init__(self, steps):
        cdef Py_ssize_t i
        self.steps = tuple(steps)
        for i in range(len(self.steps)):
            if not isinstance(self.steps[i], Step):
                raise TypeError(f"item {i} of a step list is a {type(self.steps[i]).__name__}, "
                                f"not a Step")
        self.n = len(self.steps)
        self.items = PySequence_Fast_ITEMS(self.steps)

    def __len__(self):
        return self.n

    cdef void run_nogil(self) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self.n):
            (<Step>self.items[i]).run()

    def run(self):
        """Run every step in order, the whole sequence without the GIL. The caller holds the
        plan's lock."""
        with nogil:
            self.run_nogil()


def run_steps(steps):
    """Run the steps of a list in order without the GIL (tests, benchmarks; a plan keeps its
    StepSeq)."""
    StepSeq(steps).run()


def run_step_lists(list seqs):
    """Run each StepSeq of `seqs` in order, the sequences at once, one per OpenMP thread (a
    `prange`: a sequence OpenMP gives no thread of its own runs after another on a thread it
    gave), and return when all have ended. Nothing here takes the GIL: where a batch runs as
    one part per thread (Model.run), each thread taking it back between steps waited for the
    other's, and on a busy machine every wait for the GIL is a sleep and a wake-up (LeNet-5
    at batch 16 on 2 threads: 6 steps per part, 75 us each). The caller holds every plan's
    lock."""
    cdef Py_ssize_t n = len(seqs), i
    cdef PyObject **items = PySequence_Fast_ITEMS(seqs)
    for i in range(n):
        if not isinstance(<object>items[i], StepSeq):
            raise TypeError(f"run_step_lists: item {i} is a {type(<object>items[i]).__name__}, "
                            f"not a StepSeq")
    if n == 0:
        return
    for i in prange(n, nogil=True, num_threads=n, schedule="static", chunksize=1):
        (<StepSeq>items[i]).run_nogil()


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
    caller afterwards. Each function holds the GIL but while its steps compute (`StepSeq.run`
    releases it), so the chunks of a batch run at once (Model.run): OpenMP's workers are awake
    between calls (GOMP_SPINCOUNT, config.py), where waking a Python worker thread took 30 us
    and more. Each call costs a few tens of us here (Cython gives a worker a Python thread
    state for the block and deletes it after): parts of one chunk per thread do not come
    here but run their steps with `run_step_lists`."""
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
