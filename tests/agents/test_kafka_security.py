"""The Kafka connection settings, built in one place (agents/kafka_security.py): what each
client library is given, what is refused before any connection, where a secret may appear
(only in the client objects) and the ACLs printed from schemas/topics.py's names. The
broker-side proof is tests/integration/test_secured_kafka.py."""

from __future__ import annotations

import argparse
import shlex
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)

from agents.kafka_security import (
    acl_commands,
    classify,
    describe_failure,
    faust_credentials,
    java_client_properties,
    kafka_client_config,
    librdkafka_security,
    render_commands,
    ssl_context,
    worker_resources,
)
from editstream.cli import build_parser
from schemas.topics import TOPICS
from streams import settings as settings_mod
from streams.settings import Settings

SECRET = "s3cr3t-never-shown"
SCRAM = dict(broker="kafka-1:9096,kafka-2:9096", kafka_security_protocol="SASL_SSL",
             kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="editstream-worker",
             kafka_sasl_password=SECRET)


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    s = Settings(broker="127.0.0.1:9092")
    assert kafka_client_config(s) == {"bootstrap_servers": "127.0.0.1:9092",
                                      "security_protocol": "PLAINTEXT"}
    assert kafka_client_config("127.0.0.1:9092") == {"bootstrap_servers": "127.0.0.1:9092"}
    assert faust_credentials(s) is None
    assert librdkafka_security(s) == {"security.protocol": "plaintext"}


def test_sasl_ssl_scram_for_each_client_library() -> None:
    s = Settings(**SCRAM)  # type: ignore[arg-type]
    aio = kafka_client_config(s)
    assert aio["security_protocol"] == "SASL_SSL"
    assert aio["sasl_mechanism"] == "SCRAM-SHA-512"
    assert aio["sasl_plain_username"] == "editstream-worker"
    assert aio["sasl_plain_password"] == SECRET
    ctx = aio["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.check_hostname
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ssl_context(s) is ctx  # one context per process and settings
    creds = faust_credentials(s)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert SECRET not in repr(creds)
    rd = librdkafka_security(s)
    assert rd["security.protocol"] == "sasl_ssl" and rd["sasl.mechanism"] == "SCRAM-SHA-512"
    assert rd["sasl.password"] == SECRET
    assert rd["ssl.endpoint.identification.algorithm"] == "https"
    java = java_client_properties(s)
    assert java["security.protocol"] == "SASL_SSL"
    assert "ScramLoginModule" in java["sasl.jaas.config"]


def test_hostname_verification_can_be_turned_off(tmp_path: Path) -> None:
    s = Settings(broker="b:9093", kafka_security_protocol="SSL",
                 kafka_ssl_endpoint_identification_algorithm="none")
    ctx = ssl_context(s)
    assert ctx is not None and not ctx.check_hostname
    assert librdkafka_security(s)["ssl.endpoint.identification.algorithm"] == "none"
    assert java_client_properties(s)["ssl.endpoint.identification.algorithm"] == ""


@pytest.mark.parametrize(("changes", "message"), [
    (dict(kafka_security_protocol="SASL_TLS"), "kafka_security_protocol must be one of"),
    (dict(kafka_sasl_mechanism="GSSAPI"), "kafka_sasl_mechanism must be one of"),
    (dict(kafka_sasl_password=""), "needs kafka_sasl_username and kafka_sasl_password"),
    (dict(kafka_security_protocol="SSL"), "SASL settings given but"),
    (dict(kafka_ssl_key_location="client.key"), "mTLS needs both"),
    (dict(kafka_ssl_endpoint_identification_algorithm="http"), "https or none"),
])
def test_contradictions_are_refused_before_connecting(changes: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        Settings(**{**SCRAM, **changes})  # type: ignore[arg-type]
    assert SECRET not in str(err.value)


def test_secrets_never_in_repr_help_or_flags(tmp_path: Path) -> None:
    env = {f"EDITSTREAM_{k.upper()}": v for k, v in SCRAM.items()}
    s = settings_mod.from_env(env)
    assert s.kafka_sasl_password == SECRET
    assert SECRET not in repr(s)
    helps = build_parser("worker")._subparsers._group_actions[0].choices[  # type: ignore[union-attr]
        "worker"].format_help()
    assert "--kafka-sasl-password-file" in helps
    assert "--kafka-sasl-password " not in helps and "--kafka-sasl-password\n" not in helps
    # the secret itself cannot be given as a flag (nor read as an abbreviated `-file`
    # path): refused, without repeating it
    done = subprocess.run([sys.executable, "-m", "editstream.cli", "worker",
                           "--kafka-sasl-password", SECRET], capture_output=True, text=True)
    assert done.returncode == 2
    assert "--kafka-sasl-password is not accepted" in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_a_secret_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text(SECRET + "\n")
    env = {f"EDITSTREAM_{k.upper()}": v for k, v in SCRAM.items()
           if k != "kafka_sasl_password"}
    s = settings_mod.from_env({**env, "EDITSTREAM_KAFKA_SASL_PASSWORD_FILE": str(path)})
    assert s.kafka_sasl_password == SECRET
    p = argparse.ArgumentParser()
    settings_mod.add_arguments(p)
    ns = p.parse_args(["--kafka-sasl-password-file", str(path)])
    assert settings_mod.from_args(ns, env).kafka_sasl_password == SECRET
    with pytest.raises(ValueError, match="cannot read") as err:
        settings_mod.from_env({**env, "EDITSTREAM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path)})
    assert str(tmp_path) in str(err.value)


def test_unusable_tls_files_name_the_files_not_the_key_password(tmp_path: Path) -> None:
    s = Settings(broker="b:9093", kafka_security_protocol="SSL",
                 kafka_ssl_ca_location=str(tmp_path / "missing-ca.pem"),
                 kafka_ssl_key_password=SECRET)
    with pytest.raises(ValueError, match=r"missing-ca\.pem") as err:
        kafka_client_config(s)
    assert SECRET not in str(err.value)


def test_refusals_are_classified_and_one_line() -> None:
    s = Settings(**SCRAM)  # type: ignore[arg-type]
    auth = describe_failure(SaslAuthenticationFailed("Authentication failed during ..."), s)
    assert auth is not None and auth.startswith("kafka authentication failed at kafka-1")
    assert "'editstream-worker' (SCRAM-SHA-512)" in auth
    tls = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert classify(tls) == "tls"
    denied = describe_failure(GroupAuthorizationFailedError(), s)
    assert denied is not None and "consumer group" in denied and "editstream acls" in denied
    assert classify(TopicAuthorizationFailedError()) == "authorization"
    # a broker that is down is not a refusal: the caller retries it
    assert describe_failure(KafkaConnectionError("Unable to bootstrap"), s) is None
    for line in (auth, denied):
        assert "\n" not in line and SECRET not in line


def test_acls_follow_the_topic_names() -> None:
    s = Settings(broker="k:9096", app_id="es", topic_prefix="prod-")
    commands = acl_commands(s, gateway="gw", worker="User:wk", reader="trainer")
    text = render_commands(commands)
    gateway = [c for c in commands if "User:gw" in c]
    assert len(gateway) == 1 and gateway[0].count("--topic") == 1
    assert "prod-edit-events" in gateway[0] and "Read" not in gateway[0]
    worker = " ".join(" ".join(c) for c in commands if "User:wk" in c)
    for name in TOPICS:
        assert f"--topic prod-{name}" in worker
    _, groups, tids = worker_resources(s.replace(processing_guarantee="exactly_once"))
    for group in groups:
        assert f"--group {group}" in worker
    assert groups == ["es", "es-settle", "es-stages", "es-eval"]
    # settle's es-settle-P, the stage runner's es-stages-P, eval's es-eval-P, Faust's es-G-P
    assert "--transactional-id es- --resource-pattern-type prefixed" in worker
    assert all(t.startswith("es-") for t in tids)
    reader = [c for c in commands if "User:trainer" in c]
    assert all("Write" not in c for c in reader)
    assert "--group es-reader" in text
    for line in text.splitlines():
        assert shlex.split(line)[0] == "kafka-acls.sh"


def test_acls_command_prints_them() -> None:
    done = subprocess.run([sys.executable, "-m", "editstream.cli", "acls",
                           "--principal-gateway", "gw", "--principal-worker", "wk"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.count("kafka-acls.sh") == 5
    assert "--allow-principal User:gw --operation Write --operation Describe" in done.stdout
