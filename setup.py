"""Build the C-level Cython extensions of pushcore.

Every ``ext/_NAME.pyx`` compiles to the private module ``pushcore._NAME``.
Cython always runs (it is a build requirement); no generated C is committed.

Development switches (environment variables):
  PUSHCORE_ANNOTATE=1  write Cython's annotated HTML next to each .pyx
  PUSHCORE_DEBUG=1     build with -O0 -g, bounds checks on
  PUSHCORE_EXTS=_a,_b  build only these extensions (for a quick rebuild of one)
"""
import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
DEBUG = os.environ.get("PUSHCORE_DEBUG") == "1"
ANNOTATE = os.environ.get("PUSHCORE_ANNOTATE") == "1"

cflags = ["-O0", "-g"] if DEBUG else ["-O2"]
cflags += ["-Wno-unused-function", "-Wno-unreachable-code"]

only = {n for n in os.environ.get("PUSHCORE_EXTS", "").split(",") if n}

extensions = [
    Extension(
        f"pushcore.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=["ext"],
        extra_compile_args=cflags,
    )
    for pyx in sorted((HERE / "ext").glob("_*.pyx"))
    if not only or pyx.stem in only
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],
        annotate=ANNOTATE,
        compiler_directives={
            "language_level": "3",
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": DEBUG,
            "embedsignature": True,
        },
    ),
)
