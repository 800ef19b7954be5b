"""What this build of the kernels was compiled with (reported by `fastcnn.build_info()`)."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTCNN_OPENMP 1
    static int fastcnn_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FASTCNN_OPENMP 0
    static int fastcnn_omp_max_threads(void) { return 1; }
    #endif
    #if defined(__AVX512F__)
    #define FASTCNN_ISA_FLAGS "avx512f avx2 fma"
    #elif defined(__AVX2__) && defined(__FMA__)
    #define FASTCNN_ISA_FLAGS "avx2 fma"
    #elif defined(__AVX__)
    #define FASTCNN_ISA_FLAGS "avx"
    #elif defined(__ARM_NEON)
    #define FASTCNN_ISA_FLAGS "neon"
    #elif defined(__SSE2__)
    #define FASTCNN_ISA_FLAGS "sse2"
    #else
    #define FASTCNN_ISA_FLAGS "scalar"
    #endif
    #if defined(__clang__)
    #define FASTCNN_COMPILER_VERSION "clang " __clang_version__
    #elif defined(__GNUC__)
    #define FASTCNN_COMPILER_VERSION "gcc " __VERSION__
    #else
    #define FASTCNN_COMPILER_VERSION "unknown"
    #endif
    """
    const char *FASTCNN_COMPILER
    const char *FASTCNN_COMPILER_VERSION
    const char *FASTCNN_CFLAGS
    const char *FASTCNN_ISA_FLAGS
    int FASTCNN_OPENMP
    int FASTCNN_DEBUG_BUILD
    int fastcnn_omp_max_threads()

from fastcnn._kernels.simd cimport FASTCNN_SIMD_NAME


def compiled_info():
    """Return a dict of facts fixed at compile time."""
    return {
        "compiler": FASTCNN_COMPILER.decode(),
        "compiler_version": FASTCNN_COMPILER_VERSION.decode(),
        "cflags": FASTCNN_CFLAGS.decode(),
        "openmp": bool(FASTCNN_OPENMP),
        "simd": FASTCNN_SIMD_NAME.decode(),
        "isa": FASTCNN_ISA_FLAGS.decode(),
        "debug_bounds_checks": bool(FASTCNN_DEBUG_BUILD),
        "omp_max_threads": fastcnn_omp_max_threads(),
    }
