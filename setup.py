"""The compiled scoring loops; everything else about the package is in pyproject.toml.

The one extension is declared here because setuptools' ``[tool.setuptools.ext-modules]``
table is still experimental.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streams.scoring._native",
            ["streams/scoring/_native.pyx"],
            # No fused multiply-add: chrF's floats must equal Python's to the last bit.
            extra_compile_args=["-O2", "-ffp-contract=off"],
            # A machine without a C compiler (the slim Docker image) still installs; then
            # streams.scoring.backend logs that the pure-Python reference runs, and
            # tests/streams/test_scoring_native.py fails.
            optional=True,
        )
    ]
)
