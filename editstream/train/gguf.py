"""llama.cpp's own converter (`convert_hf_to_gguf.py`, its `conversion/` package and its
`gguf-py`), from the same llama-cpp-python source distribution the Makefile compiles
`llama-server` from (`LLAMA_VERSION` there), so the GGUF is written by the code that serves it.

The three are copied out of the source distribution once into `~/.cache/editstream/
llama-convert-<version>/` (as the Makefile caches the server): from an already downloaded
`~/.cache/editstream/llama-src/llama_cpp_python-<version>.tar.gz` when there is one, else with
`pip download --no-binary :all:` (76 MB, PyPI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# Keep equal to the Makefile's LLAMA_VERSION (tests/editstream/test_train_plan.py checks).
LLAMA_VERSION = "0.3.36"
PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


class ConverterError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "editstream"


def converter_dir(version: str = LLAMA_VERSION) -> Path:
    """The cached converter tree, extracted on first use."""
    target = cache_root() / f"llama-convert-{version}"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    sdist_name = f"llama_cpp_python-{version}.tar.gz"
    with tempfile.TemporaryDirectory() as tmp:
        sdist = cache_root() / "llama-src" / sdist_name
        if not sdist.is_file():
            print(f"downloading the llama-cpp-python {version} source distribution (76 MB) "
                  "for llama.cpp's converter", file=sys.stderr)
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                 ":all:", f"llama-cpp-python=={version}", "-d", tmp],
                capture_output=True, text=True)
            sdist = Path(tmp) / sdist_name
            if done.returncode != 0 or not sdist.is_file():
                raise ConverterError("could not download llama-cpp-python's source "
                                     f"distribution: {done.stderr.strip()[-300:]}")
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        part = Path(tmp) / "tree"
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and any(m.name[len(prefix):].startswith(p) for p in PARTS)]
            if not members:
                raise ConverterError(f"{sdist} holds no {prefix}convert_hf_to_gguf.py")
            tar.extractall(part, members=members, filter="data")
        staged = Path(tmp) / "staged"
        shutil.copytree(part / prefix, staged)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            staged.rename(target)  # same filesystem? (tmp may not be): fall back to a copy
        except OSError:
            shutil.copytree(staged, str(target) + ".part", dirs_exist_ok=True)
            Path(str(target) + ".part").rename(target)
    return target


def convert(model_dir: Path, outfile: Path, outtype: str = "f16") -> Path:
    """Write `model_dir` (a transformers checkpoint) as a GGUF with llama.cpp's converter,
    run in this Python (it needs torch and transformers, which the `train` extra brings)."""
    script = converter_dir() / "convert_hf_to_gguf.py"
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # its own gguf-py
    done = subprocess.run([sys.executable, str(script), str(model_dir), "--outfile",
                           str(outfile), "--outtype", outtype],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0 or not outfile.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ConverterError(f"convert_hf_to_gguf.py failed (exit {done.returncode}):\n{tail}")
    return outfile
