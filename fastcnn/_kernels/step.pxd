# The unit the executor runs: one prepared kernel call with its views bound at plan time.
cdef class Step:
    cdef public str name          # node name, for profiles and error messages
    cdef public int num_threads   # threads this step may use (resolved once, passed down)
    cdef void run(self) noexcept nogil  # computes without the GIL; never raises, never allocates
