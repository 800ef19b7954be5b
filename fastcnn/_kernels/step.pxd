# Below this much work (elements, or inner-loop iterations of a few flops each) a kernel runs
# on one thread: waking the team costs more than the second core saves. Kernels whose
# iterations are heavier or lighter scale the work they pass, or use a threshold of their own.
cdef enum:
    PARALLEL_MIN = 32768


cdef inline int threads_for(Py_ssize_t work, int num_threads) noexcept nogil:
    """num_threads when `work` reaches PARALLEL_MIN, else 1."""
    return num_threads if work >= PARALLEL_MIN else 1


# The unit the executor runs: one prepared kernel call with its views bound at plan time.
cdef class Step:
    cdef public str name          # node name, for profiles and error messages
    cdef public int num_threads   # threads this step may use (resolved once, passed down)
    cdef void run(self) noexcept nogil  # computes without the GIL; never raises, never allocates
