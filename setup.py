"""Build hook for the one compiled piece: the cache-blocked frame transpose (alpaca_server/_transpose.c).

Everything else is declared in setup.cfg. The extension is optional: without a C compiler and the
Python headers the install still succeeds and imagecodec transposes with numpy (slower; see
docs/performance.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "alpaca_server._transpose",
            sources=["alpaca_server/_transpose.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
