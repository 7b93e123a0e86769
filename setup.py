"""Build hook for the compiled pieces: the cache-blocked frame transpose (alpaca_server/_transpose.c) and
the Rice coder of compressed FITS (zwo_common/_rice.c).

Everything else is declared in setup.cfg. The extensions are optional: without a C compiler and the
Python headers the install still succeeds, imagecodec transposes and fpack Rice-codes with numpy
(slower; see docs/performance.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "alpaca_server._transpose",
            sources=["alpaca_server/_transpose.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "zwo_common._rice",
            sources=["zwo_common/_rice.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
