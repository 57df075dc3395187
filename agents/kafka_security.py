"""Every Kafka client's connection settings, built in one place (issue 27).

The worker's Faust app, its settle and stage runners, the gateway's librdkafka producer and the
command-line tools all connect through the functions here, so a cluster that asks for TLS,
mTLS or SASL (PLAIN, SCRAM-SHA-256/512) is configured once, in `streams.settings.Settings`
(`kafka_*` fields, named after Kafka's own client properties), and no client can be left
speaking PLAINTEXT by accident.

Also here, because they follow from the same names: the one-line explanation of a refused
connection (wrong password, unknown CA, missing ACL), the start-up check that finds those
before a worker starts consuming, and the `kafka-acls` commands that grant each principal
exactly what the code uses (`schemas.topics` names: they cannot drift from the code).

Secrets (the SASL password, an ssl key's password) go into the client objects and nowhere
else: not into messages, logs or metrics; the Java properties text, which must hold them, is
only ever written to a file of mode 0600 by its caller.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import ssl
import sys
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, NoReturn

from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.metadata import MetadataRequest

from schemas.topics import (
    TOPICS,
    app_group,
    eval_group,
    settle_changelog,
    settle_group,
    stages_group,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

# A cluster to connect to: the settings (with their security), or a bare bootstrap string for
# a PLAINTEXT broker (the embedded one, tests, benchmarks).
Cluster = Settings | str

# What `--principal-reader` (export, scorecard) reads: the sink topics, no group (the export
# assigns partitions and keeps its own position in its output directory).
READER_TOPICS = ("training-records", "rejected-examples", "scored-examples", "eval-results",
                 "scorecard")


class KafkaAccessError(Exception):
    """The cluster refused us: `kind` is authentication, tls, authorization or unreachable.
    `str()` is one line, fit for a terminal and a log, with no secret in it."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- client settings


def _tls(s: Settings) -> bool:
    return s.kafka_security_protocol in ("SSL", "SASL_SSL")


def _sasl(s: Settings) -> bool:
    return s.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def ssl_context(s: Settings) -> ssl.SSLContext | None:
    """The TLS context of every aiokafka/Faust client of `s` (None without TLS). One per
    process and setting: loading a CA bundle costs tens of milliseconds."""
    if not _tls(s):
        return None
    return _ssl_context(s.kafka_ssl_ca_location, s.kafka_ssl_certificate_location,
                        s.kafka_ssl_key_location, s.kafka_ssl_key_password,
                        s.kafka_ssl_endpoint_identification_algorithm == "https")


@lru_cache(maxsize=8)
def _ssl_context(cafile: str, certfile: str, keyfile: str, key_password: str,
                 check_hostname: bool) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile or None)
        if certfile:
            ctx.load_cert_chain(certfile, keyfile or None, password=key_password or None)
    except (OSError, ssl.SSLError) as exc:
        # names the files, never the key password; the reason is OpenSSL's or the OS's
        files = ", ".join(f for f in (cafile, certfile, keyfile) if f)
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(
            exc).__name__
        raise ValueError(f"kafka TLS files ({files}) not usable: {reason}") from None
    ctx.check_hostname = check_hostname
    return ctx


def kafka_client_config(target: Cluster) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (consumer, producer, admin) of the cluster
    `target`: its bootstrap servers and security settings. A bare bootstrap string is a
    PLAINTEXT cluster (the embedded broker, tests, benchmarks)."""
    if isinstance(target, str):
        return {"bootstrap_servers": target}
    s = target
    config: dict[str, Any] = {"bootstrap_servers": s.broker,
                              "security_protocol": s.kafka_security_protocol}
    ctx = ssl_context(s)
    if ctx is not None:
        config["ssl_context"] = ctx
    if _sasl(s):
        config.update(sasl_mechanism=s.kafka_sasl_mechanism,
                      sasl_plain_username=s.kafka_sasl_username,
                      sasl_plain_password=s.kafka_sasl_password)
    return config


def faust_credentials(s: Settings) -> Any:
    """Faust's `broker_credentials` for `s` (None: PLAINTEXT). Faust turns them back into the
    same aiokafka arguments as `kafka_client_config` (its `credentials_to_aiokafka_auth`)."""
    import faust

    ctx = ssl_context(s)
    if _sasl(s):
        return faust.SASLCredentials(username=s.kafka_sasl_username,
                                     password=s.kafka_sasl_password, ssl_context=ctx,
                                     mechanism=s.kafka_sasl_mechanism)
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def librdkafka_security(s: Settings) -> dict[str, Any]:
    """The same settings as librdkafka properties (the gateway's confluent-kafka producer)."""
    config: dict[str, Any] = {"security.protocol": s.kafka_security_protocol.lower()}
    if _tls(s):
        config["ssl.endpoint.identification.algorithm"] = (
            s.kafka_ssl_endpoint_identification_algorithm or "none")
        for key, value in (("ssl.ca.location", s.kafka_ssl_ca_location),
                           ("ssl.certificate.location", s.kafka_ssl_certificate_location),
                           ("ssl.key.location", s.kafka_ssl_key_location),
                           ("ssl.key.password", s.kafka_ssl_key_password)):
            if value:
                config[key] = value
    if _sasl(s):
        config.update({"sasl.mechanism": s.kafka_sasl_mechanism,
                       "sasl.username": s.kafka_sasl_username,
                       "sasl.password": s.kafka_sasl_password})
    return config


def java_client_properties(s: Settings) -> dict[str, str]:
    """The same settings for Kafka's Java clients and tools (`--command-config`,
    `--consumer.config`): PEM files, as Java 17's clients read them. Holds the password:
    write it to a file only its owner can read."""
    props = {"bootstrap.servers": s.broker, "security.protocol": s.kafka_security_protocol}
    if _tls(s):
        props["ssl.endpoint.identification.algorithm"] = (
            "https" if s.kafka_ssl_endpoint_identification_algorithm == "https" else "")
        if s.kafka_ssl_ca_location:
            props.update({"ssl.truststore.type": "PEM",
                          "ssl.truststore.location": s.kafka_ssl_ca_location})
        if s.kafka_ssl_certificate_location:
            # Java's PEM keystore wants the certificate chain and the key in one file
            props.update({"ssl.keystore.type": "PEM",
                          "ssl.keystore.location": s.kafka_ssl_certificate_location})
            if s.kafka_ssl_key_password:
                props["ssl.key.password"] = s.kafka_ssl_key_password
    if _sasl(s):
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule"
                  if s.kafka_sasl_mechanism == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        user, password = _jaas(s.kafka_sasl_username), _jaas(s.kafka_sasl_password)
        props.update({"sasl.mechanism": s.kafka_sasl_mechanism,
                      "sasl.jaas.config": f'{module} required username="{user}" '
                                          f'password="{password}";'})
    return props


def _jaas(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# --------------------------------------------------------------------------- clear failures


def describe_failure(exc: BaseException, s: Settings | None = None) -> str | None:
    """One line saying which of the cluster's refusals `exc` is, or None when it is none of
    them (then it is the caller's to handle: a broker down is retried, not fatal)."""
    if isinstance(exc, KafkaAccessError):
        return str(exc)
    kind = classify(exc)
    if kind is None:
        return None
    detail = ""
    if kind == "tls":
        detail = str(getattr(exc, "verify_message", "") or getattr(exc, "reason", "") or "")
    resource = {TopicAuthorizationFailedError: "topic",
                GroupAuthorizationFailedError: "consumer group",
                TransactionalIdAuthorizationFailed: "transactional id",
                ClusterAuthorizationFailedError: "cluster"}.get(type(exc), "")
    named = getattr(exc, "resource_name", "")
    return refusal_line(kind, s, detail, f"{resource} {named}".strip())


def refusal_line(kind: str, s: Settings | None, detail: str = "", resource: str = "") -> str:
    """The one line for a refusal of `kind` (authentication, tls, authorization), whichever
    client met it. Names the broker, the user and the mechanism; never a secret."""
    where = f" at {s.broker}" if s is not None and s.broker else ""
    who = (f" as {s.kafka_sasl_username!r} ({s.kafka_sasl_mechanism})"
           if s is not None and _sasl(s) else "")
    if kind == "authentication":
        return (f"kafka authentication failed{where}{who}: wrong user name or password, or "
                f"the mechanism is not enabled for this user")
    if kind == "tls":
        ca = s.kafka_ssl_ca_location if s is not None else ""
        return (f"kafka TLS handshake failed{where}: certificate verify failed"
                f"{(' (' + detail + ')') if detail else ''}: the broker's certificate is "
                f"not signed by "
                f"{ca or 'a CA of the system trust store'}, or does not name the host")
    return (f"kafka authorization failed{where}{who}: no ACL allows this principal the "
            f"{resource or 'resource'}{(' (' + detail + ')') if detail else ''} "
            f"(`editstream acls` prints the ACLs to apply)")


def classify(exc: BaseException) -> str | None:
    """authentication, tls, authorization, or None."""
    if isinstance(exc, KafkaAccessError):
        return exc.kind
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError
                  | AuthenticationMethodNotSupported | UnsupportedSaslMechanismError):
        return "authentication"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls"
    if isinstance(exc, TopicAuthorizationFailedError | GroupAuthorizationFailedError
                  | TransactionalIdAuthorizationFailed | ClusterAuthorizationFailedError):
        return "authorization"
    cause = exc.__cause__ or exc.__context__
    return classify(cause) if cause is not None and cause is not exc else None


def exit_refused(who: str, line: str) -> NoReturn:
    """End the worker with the refusal's one line (exit 2, as at start-up): a runner that
    retried it would hold its partitions and never make progress."""
    log.critical("%s: %s", who, line)
    for handler in logging.getLogger().handlers:
        handler.flush()
    print(f"editstream worker: {line}", file=sys.stderr, flush=True)
    os._exit(2)


def _refused(exc: BaseException, s: Settings, name: str = "") -> KafkaAccessError:
    if name:
        exc.resource_name = name  # type: ignore[attr-defined]
    return KafkaAccessError(classify(exc) or "authorization", describe_failure(exc, s) or "")


async def check_access(s: Settings, *, topics: Iterable[str] = (), groups: Iterable[str] = (),
                       transactional_ids: Iterable[str] = (),
                       timeout_s: float = 15.0) -> None:
    """Fail fast, with one line, when the cluster would refuse `s`'s client: log in on a
    bootstrap server (TLS and SASL), then ask for the metadata of `topics` (Describe) and the
    coordinators of `groups` and `transactional_ids` (Describe on each: what the printed
    ACLs grant with Read/Write). Nothing is created, joined or fenced. Raises
    `KafkaAccessError` (unreachable too, after `timeout_s`)."""
    try:
        await asyncio.wait_for(_check_access(s, list(topics), list(groups),
                                             list(transactional_ids)), timeout_s)
    except TimeoutError:
        raise KafkaAccessError("unreachable", f"kafka at {s.broker} did not answer within "
                               f"{timeout_s:.0f} s") from None


async def _check_access(s: Settings, topics: list[str], groups: list[str],
                        tids: list[str]) -> None:
    config = kafka_client_config(s)
    config.pop("bootstrap_servers")
    last: BaseException | None = None
    hosts = [h.strip().rpartition(":") for h in s.broker.split(",") if h.strip()]
    # one connection first: aiokafka's bootstrap logs a refused login and moves on, leaving
    # only "unable to bootstrap"; the connection itself raises what happened
    for host, _, port in hosts:
        try:
            conn = await _connect(s, host, int(port), config)
        except (OSError, KafkaError, TimeoutError) as exc:
            last = exc
            continue
        conn.close()
        break
    else:
        raise KafkaAccessError("unreachable", f"kafka at {s.broker} not reachable: {last!r}")
    if not (topics or groups or tids):
        return
    client = AIOKafkaClient(**kafka_client_config(s), request_timeout_ms=10_000)
    try:
        await client.bootstrap()
        if topics:
            node = client.get_random_node()
            meta = await client.send(node, MetadataRequest(topics,
                                                           allow_auto_topic_creation=False))
            for error_code, topic, *_ in meta.topics:
                if error_code == TopicAuthorizationFailedError.errno:
                    raise _refused(TopicAuthorizationFailedError(), s, topic)
        for kind, names in ((CoordinationType.GROUP, groups),
                            (CoordinationType.TRANSACTION, tids)):
            for name in names:
                try:
                    await client.coordinator_lookup(kind, name)
                except (GroupAuthorizationFailedError,
                        TransactionalIdAuthorizationFailed) as exc:
                    raise _refused(exc, s, name) from None
                except KafkaError:
                    # the broker authorizes before it looks for a coordinator: a
                    # COORDINATOR_NOT_AVAILABLE (a fresh cluster) means we may
                    pass
    finally:
        await client.close()


async def _connect(s: Settings, host: str, port: int, config: dict[str, Any]) -> Any:
    """One logged-in connection, or the refusal (KafkaAccessError) or the error it met."""
    for attempt in (1, 2):
        try:
            return await create_conn(host, port, request_timeout_ms=10_000, **config)
        except (OSError, KafkaError, TimeoutError) as exc:
            if classify(exc) is not None:
                raise _refused(exc, s) from None
            if not (isinstance(exc, KafkaConnectionError) and _tls(s)):
                raise
            if attempt == 2:
                # TLS went through and the broker hung up, twice: it wanted what we did
                # not send (a client certificate; SASL on a SASL_SSL listener)
                raise KafkaAccessError("tls", _closed_after_tls(s, f"{host}:{port}")) from None
            await asyncio.sleep(1.0)  # once more: a broker may just be restarting
    raise AssertionError("unreachable")


def _closed_after_tls(s: Settings, where: str) -> str:
    wants = ("a client certificate (kafka_ssl_certificate_location, kafka_ssl_key_location)"
             if not s.kafka_ssl_certificate_location else "another security protocol")
    return (f"kafka at {where} closed the connection after the TLS handshake: the listener "
            f"wants {wants}, or is not {s.kafka_security_protocol}")


def worker_resources(s: Settings) -> tuple[list[str], list[str], list[str]]:
    """The topics, consumer groups and (a sample of the) transactional ids the worker uses."""
    topics = [s.topic(t) for t in TOPICS] + [settle_changelog(s)]
    groups = [app_group(s), settle_group(s), stages_group(s), eval_group(s)]
    tids = ([f"{settle_group(s)}-0", f"{stages_group(s)}-0", f"{eval_group(s)}-0",
             f"{s.app_id}-0-0"]
            if s.processing_guarantee == "exactly_once" else [])
    return topics, groups, tids


# --------------------------------------------------------------------------- ACLs


def acl_commands(s: Settings, *, gateway: str, worker: str, reader: str = "",
                 command: str = "kafka-acls.sh",
                 command_config: str = "admin.properties") -> list[list[str]]:
    """The `kafka-acls` invocations (argument lists) that let each principal do exactly what
    editstream's code does, from `schemas.topics`'s names:

    * gateway: Write (and Describe) `edit-events`;
    * worker: Read/Write/Describe/Create its topics (it creates missing ones), its settle
      state changelog and Faust's internal topics (`<app_id>-` prefixed); Read its three
      consumer groups (`<app_id>`, `-settle`, `-stages`, `-eval`); Write/Describe the
      transactional ids (`<app_id>-` prefixed: settle's `<app_id>-settle-P`, the stage
      runner's `<app_id>-stages-P`, the eval stage's `<app_id>-eval-P`, Faust's
      `<app_id>-G-P`). Also what replay and reset-offsets need: they run as the worker;
    * reader (optional): Read/Describe the sink topics (export, scorecard: no group), and
      the group `<app_id>-reader` for a subscribing consumer outside the project.

    `editstream produce` runs as the worker (it creates the pipeline's topics first).
    An idempotent producer needs no cluster ACL on Kafka >= 3.0 (KIP-679)."""
    base = [command, "--bootstrap-server", s.broker or "BOOTSTRAP", "--command-config",
            command_config, "--add"]

    def allow(principal: str, ops: Sequence[str], kind: str, names: Sequence[str],
              pattern: str = "literal") -> list[str]:
        args = [*base, "--allow-principal", _principal(principal)]
        for op in ops:
            args += ["--operation", op]
        for name in names:
            args += [f"--{kind}", name]
        if pattern != "literal":
            args += ["--resource-pattern-type", pattern]
        return args

    topics, groups, _ = worker_resources(s)
    out = [allow(gateway, ("Write", "Describe"), "topic", [s.topic("edit-events")]),
           allow(worker, ("Read", "Write", "Describe", "Create"), "topic", topics),
           # Faust's assignor/leader topic and changelogs: `<app_id>-...`
           allow(worker, ("Read", "Write", "Describe", "Create"), "topic", [f"{s.app_id}-"],
                 "prefixed"),
           allow(worker, ("Read", "Describe"), "group", groups),
           allow(worker, ("Write", "Describe"), "transactional-id", [f"{s.app_id}-"],
                 "prefixed")]
    if reader:
        out.append(allow(reader, ("Read", "Describe"), "topic",
                         [s.topic(t) for t in READER_TOPICS]))
        out.append(allow(reader, ("Read", "Describe"), "group", [reader_group(s)]))
    return out


def reader_group(s: Settings) -> str:
    """The consumer group an outside reader of the sink uses (Kafka's console consumer, a
    training job's consumer): the export needs none, a subscribing consumer does."""
    return f"{s.app_id}-reader"


def _principal(name: str) -> str:
    return name if ":" in name else f"User:{name}"


def render_commands(commands: Iterable[list[str]]) -> str:
    return "\n".join(shlex.join(c) for c in commands) + "\n"

