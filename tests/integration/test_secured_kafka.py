"""editstream on a secured Apache Kafka (issue 27): a SASL_SSL listener (a CA and a broker
certificate made here with openssl, SCRAM-SHA-256/512 users created at format time) and the
StandardAuthorizer with `allow.everyone.if.no.acl.found=false`.

Every principal gets exactly the ACLs `editstream acls` prints (applied with Kafka's own
`kafka-acls` tool, as an operator would), nothing else. The broker's PLAINTEXT listener on
loopback is the harness's (readiness probe; `User:ANONYMOUS` must be a super user for a
single KRaft node to register itself): no editstream client uses it here.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from agents.kafka_security import KafkaAccessError, java_client_properties, reader_group
from editstream.demo import accounted, expected_predictions
from editstream.infra.broker import BrokerError, BrokerHandle, ensure_kafka, start_broker
from editstream.infra.process import ManagedProcess
from editstream.sessions.generate import GenerateConfig, generate_events
from editstream.topics.kafka_io import ensure_topics, produce_events
from streams.settings import Settings
from tests.integration.conftest import Simulator, Worker, free_port, run_settings
from tests.integration.test_pipeline import wait_accounted

pytestmark = [pytest.mark.broker, pytest.mark.kafka]

USERS = ("admin", "gateway", "worker", "reader", "intruder")
# test-made secrets: random per run, so finding one in a log or a topic is never a fluke
PASSWORDS = {u: f"pw-{u}-{secrets.token_hex(12)}" for u in (*USERS, "client-key")}
TOKEN = f"editor-token-{secrets.token_hex(12)}"
REFUSAL_BOUND_S = 30.0  # a refusal is reported within this, not retried for ever


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls(d: Path) -> None:
    """A CA, a broker certificate it signs (SAN IP:127.0.0.1, hostname verification on) in
    a PKCS12 keystore, and a second CA that signed nothing (the wrong-CA case)."""
    d.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
                f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN=editstream test {ca}", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out",
            "broker.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "broker.crt", "-extfile", "san.ext",
            cwd=d)
    openssl("pkcs12", "-export", "-in", "broker.crt", "-inkey", "broker.key", "-name",
            "broker", "-out", "broker.p12", "-passout", "pass:keystore-pass", cwd=d)
    # an mTLS client: its key encrypted with a password (ssl.key.password, a secret)
    openssl("req", "-newkey", "rsa:2048", "-keyout", "client.key", "-passout",
            f"pass:{PASSWORDS['client-key']}", "-out", "client.csr", "-subj", "/CN=mtls-client",
            cwd=d)
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "client.crt", cwd=d)


@dataclass
class Secured:
    broker: BrokerHandle
    bootstrap: str  # the SASL_SSL listener
    mtls_bootstrap: str  # the SSL listener that asks for a client certificate
    tls: Path
    libs: Path
    tmp: Path

    def settings(self, user: str, mechanism: str = "SCRAM-SHA-512", *,
                 password: str | None = None, ca: str = "ca.crt", **kw: Any) -> Settings:
        return Settings(broker=self.bootstrap, kafka_security_protocol="SASL_SSL",
                        kafka_ssl_ca_location=str(self.tls / ca),
                        kafka_sasl_mechanism=mechanism, kafka_sasl_username=user,
                        kafka_sasl_password=PASSWORDS[user] if password is None else password,
                        **kw)

    def properties_file(self, s: Settings, name: str) -> Path:
        """Kafka's Java client properties for `s`, readable by its owner only."""
        path = self.tmp / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{k}={v}\n" for k, v in java_client_properties(s).items())
        return path

    def java(self, main: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([shutil.which("java") or "java", "-Xmx256m", "-cp",
                               str(self.libs / "*"), main, *args], capture_output=True,
                              text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    if os.environ.get("EDITSTREAM_SKIP_KAFKA") == "1":
        pytest.skip("EDITSTREAM_SKIP_KAFKA=1")
    for tool in ("java", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: the secured Kafka tier needs it")
    try:
        libs = ensure_kafka()
    except BrokerError as exc:
        pytest.fail(f"Apache Kafka jars unavailable: {exc}")
    tmp = tmp_path_factory.mktemp("secured-kafka")
    tls = tmp / "tls"
    make_tls(tls)
    sasl_port, mtls_port = free_port(), free_port()
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    props = {
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(tls / "broker.p12"),
        "ssl.keystore.password": "keystore-pass",
        "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": "User:ANONYMOUS;User:admin",
        # the SSL listener checks client certificates against the test CA
        "listener.name.ssl.ssl.client.auth": "required",
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls / "ca.crt"),
    }
    scram = [arg for user, pw in PASSWORDS.items() if user in USERS
             for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512")
             for arg in ("--add-scram", f"{mech}=[name={user},password={pw}]")]
    with start_broker("kafka", data_dir=tmp / "data",
                      extra_listeners={"SASL_SSL": sasl_port, "SSL": mtls_port},
                      extra_properties=props, format_args=scram) as handle:
        yield Secured(handle, f"127.0.0.1:{sasl_port}", f"127.0.0.1:{mtls_port}", tls, libs,
                      tmp)


def apply_printed_acls(sec: Secured, s: Settings, *, worker: str = "User:worker",
                       only: str = "") -> str:
    """Run what `editstream acls` prints (the lines naming `only`, when given), with Kafka's
    own kafka-acls (AclCommand), as the admin over the SASL_SSL listener. Returns the
    printed text."""
    printed = subprocess.run(
        [sys.executable, "-m", "editstream.cli", "acls", "--principal-gateway", "gateway",
         "--principal-worker", worker, "--principal-reader", "reader",
         "--broker", s.broker, "--app-id", s.app_id, "--topic-prefix", s.topic_prefix,
         "--command-config", str(sec.properties_file(sec.settings("admin"), "admin.properties"))],
        capture_output=True, text=True, check=True).stdout
    for line in printed.splitlines():
        argv = shlex.split(line)
        if only and only not in argv:
            continue
        assert argv[0] == "kafka-acls.sh"
        done = sec.java("org.apache.kafka.tools.AclCommand", *argv[1:])
        assert done.returncode == 0, done.stdout + done.stderr
    return printed


def security_env(s: Settings, secret_dir: Path) -> dict[str, str]:
    """The environment a deployment gives a process: the password in a file (mode 0600)."""
    secret = secret_dir / f"{s.kafka_sasl_username}-{secrets.token_hex(4)}.password"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(s.kafka_sasl_password + "\n")
    return {"EDITSTREAM_BROKER": s.broker,
            "EDITSTREAM_TOPIC_PREFIX": s.topic_prefix,
            "EDITSTREAM_APP_ID": s.app_id,
            "EDITSTREAM_PARTITIONS": str(s.partitions),
            "EDITSTREAM_KAFKA_SECURITY_PROTOCOL": s.kafka_security_protocol,
            "EDITSTREAM_KAFKA_SSL_CA_LOCATION": s.kafka_ssl_ca_location,
            "EDITSTREAM_KAFKA_SASL_MECHANISM": s.kafka_sasl_mechanism,
            "EDITSTREAM_KAFKA_SASL_USERNAME": s.kafka_sasl_username,
            "EDITSTREAM_KAFKA_SASL_PASSWORD_FILE": str(secret)}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EDITSTREAM_")}


def run_refused(args: list[str], env: dict[str, str]) -> tuple[int, list[str], float]:
    """Run an editstream command that must be refused: exit code, its output lines, time."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "editstream.cli", *args],
                          env={**clean_env(), **env}, capture_output=True, text=True,
                          timeout=REFUSAL_BOUND_S * 2, check=False)
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    return done.returncode, lines, time.monotonic() - started


def assert_one_line_refusal(args: list[str], env: dict[str, str], what: str,
                            outputs: list[str]) -> str:
    code, lines, took = run_refused(args, env)
    outputs.extend(lines)
    assert code == 2, lines
    assert len(lines) == 1, lines  # one line: no traceback, no retry chatter
    assert what in lines[0], lines
    assert took < REFUSAL_BOUND_S, (took, lines)
    return lines[0]


# --------------------------------------------------------------------------- the pipeline


async def test_pipeline_exactly_once_with_only_the_printed_acls(
        secured: Secured, simulator: Simulator, tmp_path: Path) -> None:
    sec = secured
    run = run_settings(sec.bootstrap, simulator.url)
    common: dict[str, Any] = dict(
        topic_prefix=run.topic_prefix, app_id=run.app_id, student_url=simulator.url,
        teacher_url=simulator.url, samples=8, idle_tick_ms=500, partitions=4,
        log_level="info", processing_guarantee="exactly_once")
    worker_s = sec.settings("worker", "SCRAM-SHA-512", metrics_port=free_port(), **common)
    gateway_s = sec.settings("gateway", "SCRAM-SHA-256", **common)
    reader_s = sec.settings("reader", "SCRAM-SHA-256", **common)
    printed = apply_printed_acls(sec, worker_s)
    assert f"--group {run.app_id}-stages" in printed

    # the worker as itself: it creates its topics, then runs settle, stages and Faust's
    # retry agent, each under exactly-once (transactional ids `<app_id>-...`)
    await ensure_topics(worker_s)
    worker = Worker(worker_s, tmp_path / "worker.log").start()
    # the gateway as itself (librdkafka, SCRAM-SHA-256), its password from a file
    port = free_port()
    gateway = ManagedProcess.start(
        "gateway", [sys.executable, "-m", "editstream.cli", "gateway"],
        log_file=tmp_path / "gateway.log",
        env={**clean_env(), **security_env(gateway_s, tmp_path),
             "EDITSTREAM_GATEWAY_TOKENS": f"editor:{TOKEN}",
             "EDITSTREAM_GATEWAY_HOST": "127.0.0.1", "EDITSTREAM_GATEWAY_PORT": str(port),
             "EDITSTREAM_LOG_LEVEL": "info"})
    try:
        url = f"http://127.0.0.1:{port}"
        events = generate_events(GenerateConfig(seed=11, sessions=8, predictions_per_session=4))
        lines = [orjson.dumps(e) for e in events]
        expected = expected_predictions(lines, worker_s)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert gateway.process.poll() is None, gateway.log_tail()
                assert time.monotonic() < deadline, gateway.log_tail()
                await asyncio.sleep(0.3)
            auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            for i in range(0, len(events), 200):
                resp = await client.post("/v1/events", content=orjson.dumps(events[i:i + 200]),
                                         headers=auth)
                assert resp.status_code == 200, resp.text
            metrics_text = (await client.get("/metrics")).text
            assert "editstream_gateway_" in metrics_text
        # end of input: the operator's flush (as the worker, which may write edit-events)
        await produce_events(worker_s, [], flush=True)
        out = await wait_accounted(worker_s, expected, worker, timeout=240)
    finally:
        gateway.stop(timeout=30)
    with_records = {r["request_id"] for r in out["training-records"]}
    rejected = {r["request_id"] for r in out["rejected-examples"]}
    assert with_records and with_records & rejected == set()
    assert expected <= accounted(out)
    assert "Traceback" not in worker.log_path.read_text(errors="replace"), worker.log_tail()
    worker_metrics = httpx.get(f"http://127.0.0.1:{worker_s.metrics_port}/metrics").text
    assert "editstream_" in worker_metrics
    worker.stop()

    # an outside client reads the sink with the same settings: Kafka's console consumer as
    # the read-only principal (its group is the one `editstream acls` grants the reader)
    n = len(out["training-records"])
    consumed = sec.java(
        "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", sec.bootstrap,
        "--topic", reader_s.topic("training-records"), "--from-beginning",
        "--group", reader_group(reader_s), "--isolation-level", "read_committed",
        "--consumer.config", str(sec.properties_file(reader_s, "reader.properties")),
        "--max-messages", str(n), "--timeout-ms", "30000")
    assert consumed.returncode == 0, consumed.stderr[-2000:]
    ids = {orjson.loads(line)["id"] for line in consumed.stdout.splitlines() if line.strip()}
    assert ids == {r["id"] for r in out["training-records"]}

    # no secret anywhere: the processes' logs, the broker's log, every topic of the run
    texts = {p.name: p.read_text(errors="replace")
             for p in (worker.log_path, tmp_path / "gateway.log")}
    assert sec.broker.log_file is not None
    texts["broker.log"] = sec.broker.log_file.read_text(errors="replace")
    texts["topics"] = orjson.dumps(out).decode()
    texts["console consumer"] = consumed.stdout + consumed.stderr
    texts["gateway /metrics"] = metrics_text
    texts["worker /metrics"] = worker_metrics
    for name, text in texts.items():
        for user, password in PASSWORDS.items():
            assert password not in text, f"{user}'s password in {name}"


# --------------------------------------------------------------------------- refusals


def test_refusals_are_one_line_and_bounded(secured: Secured, tmp_path: Path) -> None:
    """Wrong password, unknown CA, missing ACLs: exit 2 and one line that says which, for
    the worker, the gateway and the tools; never a password in what they print."""
    sec = secured
    run = run_settings(sec.bootstrap, "http://127.0.0.1:9")
    common: dict[str, Any] = dict(topic_prefix=run.topic_prefix, app_id=run.app_id,
                                  processing_guarantee="exactly_once")
    outputs: list[str] = []
    gw = ["gateway"]
    gw_env = {"EDITSTREAM_GATEWAY_TOKENS": f"editor:{TOKEN}",
              "EDITSTREAM_GATEWAY_HOST": "127.0.0.1", "EDITSTREAM_GATEWAY_PORT": "0"}

    # a principal without the ACLs: the worker, the gateway and export are refused
    intruder = sec.settings("intruder", **common)
    env = security_env(intruder, tmp_path)
    line = assert_one_line_refusal(["worker"], env, "authorization failed", outputs)
    assert "'intruder'" in line
    assert_one_line_refusal(gw, {**env, **gw_env}, "authorization failed", outputs)
    assert_one_line_refusal(["export", "--out", str(tmp_path / "export")], env,
                            "authorization failed", outputs)

    # a wrong password (the worker and the gateway), a CA that did not sign the broker
    wrong = sec.settings("worker", password="not-the-password", **common)
    env = security_env(wrong, tmp_path)
    assert_one_line_refusal(["worker"], env, "authentication failed", outputs)
    assert_one_line_refusal(gw, {**env, **gw_env}, "authentication failed", outputs)
    other_ca = sec.settings("worker", ca="other-ca.crt", **common)
    env = security_env(other_ca, tmp_path)
    line = assert_one_line_refusal(["worker"], env, "TLS handshake failed", outputs)
    assert "certificate verify failed" in line
    assert_one_line_refusal(["produce", os.devnull], env, "TLS handshake failed", outputs)

    text = "\n".join(outputs)
    print(text)  # the refusals as an operator reads them (pytest -s)
    for user, password in PASSWORDS.items():
        assert password not in text, f"{user}'s password printed"
    assert "not-the-password" not in text


# --------------------------------------------------------------------------- mTLS


async def test_mtls_client_certificate_with_an_encrypted_key(secured: Secured,
                                                             tmp_path: Path) -> None:
    """SSL with a client certificate: the principal is the certificate's subject, given
    only the printed worker ACLs; aiokafka (produce, read) and librdkafka (the gateway's
    sink) both load the encrypted key with its password, which no output shows."""
    sec = secured
    run = run_settings(sec.mtls_bootstrap, "http://127.0.0.1:9")
    s = Settings(broker=sec.mtls_bootstrap, topic_prefix=run.topic_prefix, app_id=run.app_id,
                 partitions=2, kafka_security_protocol="SSL",
                 kafka_ssl_ca_location=str(sec.tls / "ca.crt"),
                 kafka_ssl_certificate_location=str(sec.tls / "client.crt"),
                 kafka_ssl_key_location=str(sec.tls / "client.key"),
                 kafka_ssl_key_password=PASSWORDS["client-key"])
    admin = sec.settings("admin", topic_prefix=run.topic_prefix, app_id=run.app_id)
    printed = apply_printed_acls(sec, admin, worker="User:CN=mtls-client",
                                 only="User:CN=mtls-client")
    assert "--topic" in printed

    from editstream.gateway.sink import LibrdkafkaSink
    from editstream.topics.kafka_io import read_to_end

    await ensure_topics(s)
    n = await produce_events(s, [orjson.dumps({"n": i}) for i in range(5)])
    sink = await LibrdkafkaSink.start(s)
    try:
        assert await sink.deliver(s.topic("edit-events"), [(b"k", b'{"n": 5}')], 20)
    finally:
        await sink.stop(5)
    got = [orjson.loads(r.value)["n"] async for r in read_to_end(s, s.topic("edit-events"))]
    assert n == 5 and sorted(got) == list(range(6))

    # the same client without its certificate is not let in
    bare = s.replace(kafka_ssl_certificate_location="", kafka_ssl_key_location="",
                     kafka_ssl_key_password="")
    code, lines, took = run_refused(["produce", os.devnull], {
        "EDITSTREAM_BROKER": bare.broker, "EDITSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
        "EDITSTREAM_KAFKA_SSL_CA_LOCATION": bare.kafka_ssl_ca_location,
        "EDITSTREAM_TOPIC_PREFIX": bare.topic_prefix})
    assert code == 2 and len(lines) == 1 and took < REFUSAL_BOUND_S, lines
    assert "closed the connection after the TLS handshake" in lines[0]
    assert "client certificate" in lines[0]
    assert PASSWORDS["client-key"] not in "\n".join(lines)


# --------------------------------------------------------------------------- gateway health


async def test_gateway_readiness_names_the_refusal(secured: Secured) -> None:
    """The gateway's librdkafka producer meets the refusal itself (not only the start-up
    check): a wrong password fails its start with the one line, and a principal that may not
    write `edit-events` makes `/readyz` answer 503 with that line as its detail."""
    from editstream.gateway.server import GatewayConfig, start_gateway
    from editstream.gateway.sink import LibrdkafkaSink

    sec = secured
    run = run_settings(sec.bootstrap, "http://127.0.0.1:9")
    wrong = sec.settings("gateway", "SCRAM-SHA-256", password="not-the-password",
                         topic_prefix=run.topic_prefix)
    started = time.monotonic()
    with pytest.raises(KafkaAccessError, match="kafka authentication failed") as err:
        await LibrdkafkaSink.start(wrong, timeout_s=10)
    assert time.monotonic() - started < REFUSAL_BOUND_S
    assert "not-the-password" not in str(err.value)

    intruder = sec.settings("intruder", "SCRAM-SHA-256", topic_prefix=run.topic_prefix)
    sink = await LibrdkafkaSink.start(intruder)  # metadata is not refused, writing is
    config = GatewayConfig(tokens=(("editor", TOKEN),), host="127.0.0.1", port=0,
                           send_timeout_s=10)
    handle = await start_gateway(intruder, config, sink)
    try:
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            events = generate_events(GenerateConfig(seed=5, sessions=1,
                                                    predictions_per_session=1))[:5]
            resp = await client.post("/v1/events", content=orjson.dumps(events), headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            assert resp.status_code == 503
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            detail = ready.json()["detail"]
            assert detail.startswith("kafka authorization failed at ") and "'intruder'" in detail
            assert PASSWORDS["intruder"] not in ready.text
    finally:
        await handle.stop()
        await sink.stop(5)
