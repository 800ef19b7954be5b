"""Build fastcnn's Cython kernels.

Every build setting lives here (DESIGN rule 8):
- Cython directives are set once, globally; ``FASTCNN_DEBUG_CYTHON=1`` turns bounds checks,
  wraparound and initialisation checks back on for a test run.
- OpenMP is probed with a tiny program; without it the build still works (``prange`` runs serially).
- ``-march=native`` is used when the compiler accepts it, so the kernels use AVX2/FMA on the machine
  they are built on; ``FASTCNN_ARCH=portable`` (or any ``-march`` value) overrides it, and the
  kernels fall back to plain C (see ``fastcnn/_kernels/simd.h``) when AVX2/FMA are not enabled.
- No ``-ffast-math``: it breaks NaN/Inf semantics.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL_DIR = os.path.join("fastcnn", "_kernels")
DEBUG = os.environ.get("FASTCNN_DEBUG_CYTHON", "") not in ("", "0")
ARCH = os.environ.get("FASTCNN_ARCH", "native")


def _compiler():
    return os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0] or "cc"


def _compiles(flags, source="int main(void){return 0;}\n", link_flags=()):
    """True when the C compiler builds `source` with `flags`."""
    cc = _compiler()
    if shutil.which(cc) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        cmd = [cc, *flags, src, "-o", os.path.join(tmp, "probe"), *link_flags]
        try:
            return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False


OPENMP_PROBE = """
#include <omp.h>
int main(void){ int s = 0;
#pragma omp parallel for reduction(+:s)
for (int i = 0; i < 4; i++) s += i;
return s == 6 ? 0 : 1; }
"""


def build_flags():
    # -fno-trapping-math: fastcnn never enables floating-point traps, so gcc may turn float
    # selects (x < lo ? lo : x) into vector blends and vectorise activation loops; results,
    # NaN and Inf included, are unchanged (unlike -ffast-math). -fno-math-errno: nothing reads
    # errno, so fmaf/sqrtf are single instructions and loops over them vectorise (exp's
    # polynomial is fmaf steps where the target has FMA, simd_math.h); results unchanged.
    compile_args = ["-O3", "-std=c99", "-fno-strict-aliasing", "-fno-trapping-math", "-fno-math-errno",
                    "-Wno-unused-function", "-Wno-unreachable-code", "-Wno-maybe-uninitialized"]
    link_args = []
    if sys.platform == "win32":
        compile_args = ["/O2"]
    if DEBUG:
        compile_args[0] = "-O1"
        compile_args.append("-g")
    if ARCH not in ("", "portable") and _compiles([f"-march={ARCH}"]):
        compile_args.append(f"-march={ARCH}")
    openmp = sys.platform != "win32" and _compiles(["-fopenmp"], OPENMP_PROBE, ["-fopenmp"])
    if os.environ.get("FASTCNN_NO_OPENMP"):
        openmp = False
    if openmp:
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    return compile_args, link_args, openmp


def extensions():
    compile_args, link_args, openmp = build_flags()
    flags_text = " ".join(compile_args)
    macros = [
        ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
        ("FASTCNN_COMPILER", '"%s"' % _compiler()),
        ("FASTCNN_CFLAGS", '"%s"' % flags_text),
        ("FASTCNN_DEBUG_BUILD", "1" if DEBUG else "0"),
    ]
    exts = []
    for fname in sorted(os.listdir(KERNEL_DIR)):
        if fname.endswith(".pyx"):
            mod = fname[:-4]
            exts.append(Extension(
                f"fastcnn._kernels.{mod}",
                [os.path.join(KERNEL_DIR, fname)],
                include_dirs=[numpy.get_include(), KERNEL_DIR],
                define_macros=macros,
                extra_compile_args=compile_args,
                extra_link_args=link_args,
            ))
    directives = {
        "language_level": 3,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        # C division semantics everywhere (kernels are written for them), debug build included.
        "cdivision": True,
        "nonecheck": DEBUG,
        "embedsignature": True,
        "freethreading_compatible": True,
    }
    return cythonize(exts, compiler_directives=directives, quiet=True, force=_mode_changed())


def _mode_changed() -> bool:
    """True when the last build used other directives (debug vs release): cythonize only
    compares timestamps, so without this FASTCNN_DEBUG_CYTHON=1 would silently reuse the
    release .c files (and switching back would keep the bounds-checked ones)."""
    mode_file = os.path.join("build", "fastcnn-build-mode")
    mode = "debug" if DEBUG else "release"
    try:
        with open(mode_file) as f:
            previous = f.read()
    except OSError:
        previous = None
    os.makedirs("build", exist_ok=True)
    with open(mode_file, "w") as f:
        f.write(mode)
    return previous != mode


class ParallelBuildExt(build_ext):
    """Compile the extension modules in parallel (one job per CPU) unless -j was given."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1


setup(ext_modules=extensions(), cmdclass={"build_ext": ParallelBuildExt})
