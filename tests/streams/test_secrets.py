"""The secret detector: every supported credential format is found wherever it sits in an
event, and ordinary source code (the whole standard library) raises no alarm.

Fake credentials are assembled at run time from fragments, so this file contains no string
that a repository secret scanner would (rightly) flag on push.
"""

from __future__ import annotations

import base64
import random
import string
import sysconfig
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from editstream.sessions.generate import GenerateConfig, generate_events
from streams import secrets
from streams.secrets import SECRET_KINDS, event_secret, find_secret

RNG = random.Random(5)
ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    # Always mixes the three classes, like generated keys do.
    body = "".join(RNG.choice(alphabet) for _ in range(n - 3))
    return body + "aZ7"


def b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).decode().rstrip("=")


def pem(kind: str = "RSA ", sep: str = "\n") -> str:
    lines = [rand(64, ALNUM + "+/") for _ in range(4)]
    return (f"-----BEGIN {kind}PRIVATE KEY-----{sep}" + sep.join(lines)
            + f"{sep}-----END {kind}PRIVATE KEY-----")


FAKES: dict[str, list[str]] = {
    "private_key": [pem(), pem(""), pem("OPENSSH "), pem("EC ", "\\n"),
                    "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
                    "DEK-Info: AES-128-CBC,0A1B\n\n" + rand(64, ALNUM + "+/")],
    "aws_access_key": ["AKIA" + rand(16, string.ascii_uppercase + string.digits)[:-3] + "Q7Z",
                       "ASIA" + "Q" * 12 + "7Z3X"],
    "aws_secret_key": ["aws_secret_access_key = " + rand(40, ALNUM + "/+"),
                       'AWS_SECRET_ACCESS_KEY="' + rand(40) + '"'],
    "github_token": ["ghp" + "_" + rand(36), "gho" + "_" + rand(36),
                     "github" + "_pat_" + rand(22) + "_" + rand(59)],
    "slack_token": ["xox" + "b-" + "1234567890-" + "9876543210-" + rand(24),
                    "xox" + "p-" + "12345678901-" + rand(30)],
    "slack_webhook": ["https://hooks.slack.com/services/T0" + rand(8).upper() + "/B0"
                      + rand(8).upper() + "/" + rand(24)],
    "api_key_sk": ["sk" + "-" + rand(48), "sk" + "-proj-" + rand(40) + "_" + rand(20),
                   "sk" + "-ant-api03-" + rand(60)],
    "stripe_key": ["sk" + "_live_" + rand(24), "rk" + "_live_" + rand(30)],
    "google_api_key": ["AI" + "za" + rand(35, ALNUM + "_-")],
    "jwt": [b64url({"alg": "HS256", "typ": "JWT"}) + "." + b64url({"sub": "1234567890",
                                                                    "name": "Jane"})
            + "." + rand(43, ALNUM + "_-")],
}


def test_every_kind_has_examples() -> None:
    assert set(FAKES) == set(SECRET_KINDS)


@pytest.mark.parametrize(("kind", "token"),
                         [(k, t) for k, ts in FAKES.items() for t in ts])
@pytest.mark.parametrize("context", ["{}", "x = '{}'\n", 'key="{}";', "  # {}\n",
                                     "--header 'Authorization: Bearer {}'"])
def test_detects_each_format_in_context(kind: str, token: str, context: str) -> None:
    assert find_secret(context.format(token)) == kind


# Near misses that real code is full of: must stay silent.
NEAR_MISSES = [
    "-----BEGIN RSA PRIVATE KEY-----",  # a parser's constant, no key material
    'PEM_HEADER = "-----BEGIN PRIVATE KEY-----"\nif line == PEM_HEADER:\n    parse()',
    "-----BEGIN CERTIFICATE-----\n" + "A" * 64 + "\n-----END CERTIFICATE-----",
    "AKIAIOSFODNN7EXAMPLE",  # AWS's own documentation placeholder
    "AKIA_SHORT1234",
    "ghp_short",
    "my_ghp_" + "a1B2" * 9,  # the prefix inside a longer identifier
    "sk-learn-compatible-estimator-interface",  # kebab-case prose, no mixed classes
    "task-sk-" + "abcdefghijklmnopqrstuvwxyz",
    "disk-" + "A1b2C3d4E5f6G7h8I9j0K1l2",
    "xoxo-hugs-and-kisses-for-everyone",
    "AIzaShort",
    "eyJhbGciOi.notajwt",
    "eyJ" + "a" * 20 + ".eyJ" + "b" * 20 + "." + "c" * 20,  # header is not JSON with alg
    "sha256:" + "0123456789abcdef" * 4,
    "550e8400-e29b-41d4-a716-446655440000",
    base64.b64encode(bytes(range(48))).decode(),
    "secret_access_key = os.environ['AWS_SECRET_ACCESS_KEY']",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_not_secrets(text: str) -> None:
    assert find_secret(text) is None


def test_standard_library_sources_raise_no_alarm() -> None:
    """Low false positives on real code: a large sample of the standard library is clean.

    (The whole stdlib plus this venv's site-packages, ~225 MB of Python, gave no hit when the
    rules were written; here a fixed sample keeps the test fast.)
    """
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:120]
    assert len(files) > 50
    flagged = [f.name for f in files if find_secret(f.read_text("utf-8", "replace"))]
    assert flagged == []


def test_generated_traces_are_clean() -> None:
    """The generator's synthetic `.env`/`.pem`/`client_secret` content is obviously fake
    and handled by the path globs, not by this detector."""
    events = generate_events(GenerateConfig(seed=3, sessions=4))
    assert [e for e in events if event_secret(e)] == []


@pytest.mark.parametrize("where", ["excerpt", "text", "output", "settled_region", "history",
                                  "repo_url", "extra", "nested_key"])
def test_event_secret_scans_every_string(where: str) -> None:
    def event(value: str) -> dict[str, object]:
        ev: dict[str, object] = {"v": 1, "type": "prediction", "session_id": "s", "ts_ms": 1,
                                 "excerpt": "def f():\n    pass\n", "history": []}
        if where == "history":
            ev["history"] = [{"path": "a.py", "diff": f"+TOKEN = '{value}'\n",
                              "predicted": False, "ts_ms": 0}]
        elif where == "repo_url":
            ev["repo_url"] = f"https://user:{value}@github.com/acme/app.git"
        elif where == "extra":
            ev["x_debug"] = {"env": [{"value": value}]}
        elif where == "nested_key":
            ev["x_map"] = {value: 1}
        else:
            ev[where] = f"prefix {value} suffix"
        return ev

    assert event_secret(event(FAKES["github_token"][0])) == "github_token"
    assert event_secret(event("nothing-to-see-here-at-all")) is None


def test_json_escaping_does_not_hide_secrets() -> None:
    """event_secret scans the event's JSON, where newlines and quotes are escaped."""
    key = FAKES["private_key"][0]  # header, newline, key material
    assert event_secret({"excerpt": f'KEY = """\n{key}\n"""'}) == "private_key"
    secret = FAKES["aws_secret_key"][1]  # AWS_SECRET_ACCESS_KEY="..."
    assert event_secret({"text": secret}) == "aws_secret_key"
    value = secret.split('"')[1]
    assert event_secret({"aws_secret_access_key": value}) == "aws_secret_key"  # a field name
    assert event_secret({"text": "aws_secret_access_key = os.environ[KEY]"}) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + " \n=:'\"./_-", max_size=400))
def test_random_code_like_text_is_quiet_without_prefixes(text: str) -> None:
    """Without one of the distinctive prefixes nothing can match, whatever the noise."""
    prefixes = ("PRIVATE KEY", "AKIA", "ASIA", "ecret_access_key", "ECRET_ACCESS_KEY",
                "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox",
                "hooks.slack.com/", "sk-", "k_live_", "AIza", "eyJ")
    if not any(p in text for p in prefixes):
        assert find_secret(text) is None


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([t for ts in FAKES.values() for t in ts]),
       st.text(alphabet=string.printable, max_size=200),
       st.text(alphabet=string.printable, max_size=200))
def test_a_token_between_separators_is_always_found(token: str, before: str,
                                                    after: str) -> None:
    assert find_secret(f"{before} {token}\n{after}") is not None


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([t for ts in FAKES.values() for t in ts]),
       st.text(max_size=60), st.sampled_from([" ", "\n", "\t", "\r\n", "\x01", "'", '"',
                                              "\\", "=", "("]),
       st.sampled_from(["excerpt", "text", "settled_region", "x_extra"]))
def test_a_token_is_found_in_an_event_whatever_precedes_it(token: str, text: str, sep: str,
                                                           field: str) -> None:
    """In the event's JSON the characters around a token are escaped (`\\n`, `\\"`,
    `\\u0001`): none of that may hide it."""
    assert event_secret({"v": 1, field: f"{text}{sep}{token}{sep}{text}"}) is not None



_LITERALS = [lit for rule in secrets.RULES for lit in rule.literals]


@given(st.lists(st.sampled_from([*_LITERALS, "a", "_", " ", "k", "ECRET", "gh", "xo"]),
                max_size=8).map("".join))
def test_prefix_scan_finds_exactly_the_texts_with_a_literal(text: str) -> None:
    # the one-pass pre-filter (grouped by first character) must agree with a plain search
    assert (secrets._ANY_LITERAL.search(text) is not None) == any(
        lit in text for lit in _LITERALS)
