"""A local Apache Kafka cluster of N KRaft nodes (each a combined controller + broker), for
fault runs that need replication: a killed broker whose partitions move to the others.

`editstream.infra.broker` starts one node; this module starts N on 127.0.0.1 from the same Maven
jars, with replication factor N (at most 3) and `min.insync.replicas` N-1 for every topic,
including the consumer-offsets and transaction-state topics, so a transaction survives the
loss of one node. Each node keeps its data dir and ports, so `kill(i)` then `restart(i)` is a
crash and recovery of that node.

Startup seen on the 2-core dev machine: ~15-25 s for 3 fresh nodes (three JVMs and their
storage-format runs), ~10-20 s for a node restarted after kill -9.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient

from editstream.infra.broker import (
    _LOG4J2,
    DEFAULT_KAFKA_VERSION,
    PROBE_TOPIC,
    BrokerError,
    BrokerHandle,
    _java,
    _new_cluster_id,
    _run_sync,
    _wait_ready,
    _write_properties,
    acreate_topics,
    ensure_kafka,
    free_port,
)

__all__ = ["Cluster", "Node", "start_cluster"]

_live: set[Cluster] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Never leave orphan JVMs behind when a run crashes (they run in their own session)."""
    for cluster in list(_live):
        with contextlib.suppress(Exception):
            cluster.stop(timeout=10)


@dataclass(eq=False)
class Node:
    """One KRaft node: its id, client and controller ports, data dir and process."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(eq=False)
class Cluster:
    """A running N-node cluster; `bootstrap` lists every node."""

    nodes: list[Node]
    jvm: list[str] = field(repr=False)
    replication_factor: int = 1

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no flush, no clean-shutdown marker (log recovery on restart)."""
        proc = self.node(node_id).process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, node_id: int, ready_timeout: float = 180) -> None:
        """Start a stopped node again on its data dir and ports; return once it serves."""
        node = self.node(node_id)
        if node.is_running():
            raise BrokerError(f"node {node_id} is running")
        start = node.log_file.stat().st_size if node.log_file.exists() else 0
        node.process = _spawn(self.jvm, node)
        assert node.process is not None
        _wait_node_ready(node, start, ready_timeout)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM every node (a clean shutdown), SIGKILL what is still up after `timeout`."""
        _live.discard(self)
        for n in self.nodes:
            if n.is_running():
                assert n.process is not None
                with contextlib.suppress(ProcessLookupError):
                    n.process.send_signal(signal.SIGTERM)
        for n in self.nodes:
            if n.process is not None:
                try:
                    n.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    n.process.kill()
                    n.process.wait()

    async def leaders(self, topic: str) -> dict[int, int]:
        """Partition → leader node id (-1: none) of `topic`, from the cluster's metadata."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            (desc,) = await admin.describe_topics([topic])
            return {p["partition"]: p["leader"] for p in desc["partitions"]}
        finally:
            await admin.close()

    async def under_replicated(self, topics: list[str]) -> int:
        """Partitions of `topics` whose in-sync replicas are fewer than their replicas."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            descs = await admin.describe_topics(topics)
            return sum(1 for d in descs for p in d["partitions"]
                       if len(p["isr"]) < len(p["replicas"]))
        finally:
            await admin.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _properties(node: Node, voters: str, n: int, partitions: int) -> dict[str, str]:
    rf = min(n, 3)
    isr = max(1, rf - 1)
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": (f"PLAINTEXT://127.0.0.1:{node.port},"
                      f"CONTROLLER://127.0.0.1:{node.controller_port}"),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(node.data_dir / "logs"),
        "auto.create.topics.enable": "true",
        "num.partitions": str(partitions),
        # every topic, internal ones included, survives the loss of one node
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(isr),
        "offsets.topic.replication.factor": str(rf),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(isr),
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(isr),
        "unclean.leader.election.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        # a killed node is noticed within 6 s; not shorter: three JVMs share two busy cores,
        # and a GC pause must not look like a crash
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "6000",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.replica.fetchers": "1",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "168",
    }


def _wait_node_ready(node: Node, log_start: int, timeout: float) -> None:
    """The single broker's readiness probe, on one node (its process stays the cluster's)."""
    assert node.process is not None
    _wait_ready(BrokerHandle("kafka", node.bootstrap, (node.process, node.log_file, log_start)),
                timeout)


def _spawn(jvm: list[str], node: Node) -> subprocess.Popen[bytes]:
    with node.log_file.open("ab") as log:
        return subprocess.Popen([*jvm, "kafka.Kafka", str(node.data_dir / "server.properties")],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def start_cluster(root: Path, n: int = 3, *, partitions: int = 8, heap_mb: int = 512,
                  ready_timeout: float = 240) -> Cluster:
    """Format and start `n` nodes under `root/node-<id>`; return once each serves a produce."""
    version = os.environ.get("EDITSTREAM_KAFKA_VERSION", DEFAULT_KAFKA_VERSION)
    java = _java()
    libs = ensure_kafka(version)
    root.mkdir(parents=True, exist_ok=True)
    log4j = root / "log4j2.properties"
    log4j.write_text(_LOG4J2)
    jvm = [java, f"-Xms{min(256, heap_mb)}m", f"-Xmx{heap_mb}m", "-XX:+UseG1GC",
           "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
           "-cp", str(libs / "*")]
    used: set[int] = set()

    def port() -> int:
        p = free_port()
        while p in used:
            p = free_port()
        used.add(p)
        return p

    nodes = [Node(i, port(), port(), root / f"node-{i}") for i in range(1, n + 1)]
    voters = ",".join(f"{nd.node_id}@127.0.0.1:{nd.controller_port}" for nd in nodes)
    cluster_id = _new_cluster_id()
    for nd in nodes:
        nd.data_dir.mkdir(parents=True, exist_ok=True)
        props = nd.data_dir / "server.properties"
        _write_properties(props, _properties(nd, voters, n, partitions))
        with nd.log_file.open("ab") as log:
            fmt = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                                  "-c", str(props)], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, check=False)
        if fmt.returncode != 0:
            raise BrokerError(f"storage format of node {nd.node_id} failed; log {nd.log_file}")
    cluster = Cluster(nodes, jvm, replication_factor=min(n, 3))
    _live.add(cluster)
    try:
        for nd in nodes:  # all at once: a controller quorum needs a majority to elect
            nd.process = _spawn(jvm, nd)
        _run_sync(lambda: _wait_all_registered(cluster, ready_timeout))
        # the readiness probe's topic, replicated like every other: with min.insync.replicas
        # above 1, a produce to a one-replica topic would be refused
        _run_sync(lambda: acreate_topics(cluster.bootstrap, [PROBE_TOPIC], partitions=1,
                                         replication_factor=cluster.replication_factor))
        for nd in nodes:
            assert nd.process is not None
            _wait_node_ready(nd, 0, ready_timeout)
    except BaseException:
        for nd in nodes:
            if nd.process is not None and nd.process.poll() is None:
                nd.process.kill()
                nd.process.wait()
        raise
    return cluster


async def _wait_all_registered(cluster: Cluster, timeout: float) -> None:
    """Until the metadata lists every node as a broker (a topic created earlier would get
    fewer replicas than asked, or fail)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    want = {nd.node_id for nd in cluster.nodes}
    while True:
        if loop.time() > deadline:
            raise BrokerError(f"cluster never listed brokers {sorted(want)}")
        for nd in cluster.nodes:
            if nd.process is not None and nd.process.poll() is not None:
                raise BrokerError(f"node {nd.node_id} exited during startup; log {nd.log_file}")
        if not all(_accepts(nd.port) for nd in cluster.nodes):  # no client log spam
            await asyncio.sleep(0.5)
            continue
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        try:
            await admin.start()
            info = await admin.describe_cluster()
            if {b["node_id"] for b in info["brokers"]} >= want:
                return
        except Exception:  # any client error means "not up yet"
            pass
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        await asyncio.sleep(0.5)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
