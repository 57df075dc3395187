"""One child process's life, the same for the broker, the local model and the simulator:
start it with its output in a log file, wait until it answers, read the log's tail for an
error message, stop it (SIGTERM, then SIGKILL after a grace period), and clean up after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Self

import httpx

from streams.settings import ENV_PREFIX, Settings, to_env

ENV_APP_ID = f"{ENV_PREFIX}APP_ID"

__all__ = ["ManagedProcess", "ProcessError", "free_port", "http_ok", "left_behind", "log_tail",
           "spawn", "spawn_worker"]


class ProcessError(RuntimeError):
    """A child process exited during startup or did not become ready in time."""


def free_port() -> int:
    """Ask the kernel for a currently free TCP port on 127.0.0.1.

    There is an unavoidable race between closing this socket and the child binding the
    port; on a dev/CI box it is negligible.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 40, start: int = 0) -> str:
    """Last ``lines`` lines of ``path`` from byte offset ``start`` (empty if missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: ``GET url`` answers 200 (a connection error is "not yet")."""

    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


def spawn(
    cmd: Sequence[str],
    *,
    log_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    new_session: bool = False,
) -> tuple[subprocess.Popen[bytes], Path | None, int]:
    """Start ``cmd`` with its output appended to ``log_file`` (None: discarded); returns the
    process, the log and where this run's lines begin in it. ``new_session``: Ctrl-C in a
    terminal goes to us, not the child."""
    log_start = 0
    out: IO[bytes] | int = subprocess.DEVNULL
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_start = log_file.stat().st_size if log_file.exists() else 0
        out = log_file.open("ab")
    try:
        process = subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=None if env is None else dict(env), cwd=cwd, start_new_session=new_session,
        )
    finally:
        if not isinstance(out, int):
            out.close()  # the child has its own descriptor
    return process, log_file, log_start


class ManagedProcess:
    """A started child process whose stdout and stderr go to ``log_file`` (appended; None:
    discarded). ``cleanup`` callbacks run once it is gone (temp dirs, a registry entry)."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_file: Path | None,
                 log_start: int = 0) -> None:
        self.name = name
        self.process = process
        self.log_file = log_file
        self.log_start = log_start  # where this run's lines begin in an appended log
        self.cleanup: list[Callable[[], None]] = []

    @classmethod
    def start(cls, name: str, cmd: Sequence[str], **options: Any) -> ManagedProcess:
        """Spawn ``cmd`` (options: :func:`spawn`'s) and manage it."""
        return cls(name, *spawn(cmd, **options))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def is_running(self) -> bool:
        return self.process.poll() is None

    def wait_ready(
        self,
        ready: Callable[[], bool],
        timeout: float,
        *,
        interval: float = 0.1,
        error: type[Exception] = ProcessError,
        detail: Callable[[], str] = lambda: "",
    ) -> None:
        """Poll ``ready()`` until it is true; raise ``error`` with the log's tail if the
        process exits first or ``timeout`` seconds pass (``detail``: e.g. the last error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise error(f"{self.name} exited with code {self.process.returncode} during "
                            f"startup{self._log_note()}")
            if ready():
                return
            time.sleep(interval)
        raise error(f"{self.name} not ready after {timeout:.0f}s{detail()}{self._log_note()}")

    def log_tail(self, lines: int = 40, *, this_run: bool = False) -> str:
        """Last lines of the log (``this_run``: only what this start appended)."""
        if self.log_file is None:
            return ""
        return log_tail(self.log_file, lines, self.log_start if this_run else 0)

    def _log_note(self) -> str:
        if self.log_file is None:
            return ""
        return f"; log {self.log_file}:\n{self.log_tail(60, this_run=True)}"

    def stop(self, timeout: float = 30) -> None:
        """Stop cleanly: SIGTERM, wait up to ``timeout`` s, then SIGKILL."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL (fault tests: no flush, no clean shutdown)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        callbacks, self.cleanup = self.cleanup, []
        for callback in callbacks:
            callback()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def spawn_worker(settings: Settings, log_file: Path, *, env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None, module: str = "editstream.cli") -> ManagedProcess:
    """The `editstream worker` a user runs, configured by ``settings`` through its
    environment (plus ``env``), its output appended to ``log_file``. ``module``: another
    entry point taking the same environment (the settle bench's worker)."""
    cmd = [sys.executable, "-m", module, *(["worker"] if module == "editstream.cli" else [])]
    full_env = {**os.environ, **(env or {}), **to_env(settings)}
    return ManagedProcess.start("worker", cmd, log_file=log_file, env=full_env, cwd=cwd)


def left_behind(settings: Settings, wait_s: float = 5.0) -> list[int]:
    """Pids of processes still running with this app's environment (`EDITSTREAM_APP_ID`),
    after waiting up to ``wait_s`` for them to end: call it once the run's workers are
    stopped or killed. A worker's CPU pool processes inherit its environment, so a pool
    that outlived its worker shows here (with parent 1). Linux only (/proc); empty elsewhere.
    """
    marker = b"\0" + f"{ENV_APP_ID}={settings.app_id}".encode() + b"\0"
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    environ = b"\0" + fh.read() + b"\0"
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    zombie = fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if not zombie and marker in environ:
                found.append(int(entry))
        if not found or time.monotonic() >= deadline:
            return sorted(found)
        time.sleep(0.2)
