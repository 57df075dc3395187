"""The `editstream` command line, without a broker: every subcommand parses and shows its help,
and representative command lines reach the right module's `main_*` with the flags parsed.

The `main_*` functions are replaced on their own modules (the CLI imports them when it runs a
command), so these tests go through the real parser and the real dispatch."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from editstream import cli, replay
from editstream.dataset import export, promreport, report
from editstream.gateway import server as gateway
from editstream.topics import offsets
from streams import settings as settings_mod

COMMANDS = ["worker", "demo", "broker", "simulate", "local-model", "generate", "produce",
            "gateway", "replay", "reset-offsets", "export", "report", "scorecard", "acls",
            "train", "flywheel"]
ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """Stands in for a `main_*`: remembers the namespace it got, returns a marker code."""

    def __init__(self, code: int = 42) -> None:
        self.code = code
        self.calls: list[argparse.Namespace] = []

    def __call__(self, ns: argparse.Namespace) -> int:
        self.calls.append(ns)
        return self.code

    @property
    def ns(self) -> argparse.Namespace:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


def must_not_run(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("called the wrong entry point")


def test_the_command_table_is_what_the_tests_cover() -> None:
    assert list(cli.COMMANDS) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_subcommand(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: editstream {command}")


def test_every_subcommand_flags_build_together() -> None:
    """All subcommands populated at once: no flag is registered twice anywhere."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == COMMANDS


@pytest.mark.parametrize(("command", "flags"), [
    ("gateway", ["--port", "--tokens-file", "--rate", "--broker", "--topic-prefix"]),
    ("replay", ["--topic", "--from", "--to", "--dry-run", "--pipeline-version", "--broker"]),
    ("reset-offsets", ["--group", "--to", "--topic", "--execute", "--broker", "--app-id"]),
    ("export", ["--out", "--since", "--format", "--rejected", "--restart",
                "--pipeline-version", "--broker"]),
    ("report", ["DIR", "--no-plots", "--prometheus", "--out", "--lookback"]),
    ("local-model", ["serve"]),
    ("scorecard", ["--from", "--to", "--baseline", "--candidate", "--results", "--live",
                   "--out", "--scorecard-min-pairs", "--scorecard-max-reversal-increase",
                   "--broker", "--topic-prefix"]),
])
def test_help_lists_the_flags(command: str, flags: list[str],
                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    for flag in flags:
        assert flag in out, flag


# --------------------------------------------------------------------------- dispatch


def test_replay_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(replay, "main_replay", rec)
    code = cli.main(["replay", "--topic", "settled-examples", "--from", "2026-11-25T14:00:00Z",
                     "--to", "offset:100", "--pipeline-version", "v2", "--dry-run",
                     "--broker", "kafka:9092", "--workers", "3"])
    assert code == 42
    ns = rec.ns
    assert (ns.topic, ns.from_, ns.to, ns.dry_run, ns.workers) == (
        "settled-examples", "2026-11-25T14:00:00Z", "offset:100", True, 3)
    s = settings_mod.from_args(ns, environ={})
    assert (s.pipeline_version, s.broker) == ("v2", "kafka:9092")


def test_replay_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(replay, "main_replay", rec)
    cli.main(["replay"])
    assert (rec.ns.topic, rec.ns.from_, rec.ns.to, rec.ns.dry_run) == (
        "edit-events", "earliest", "latest", False)


def test_reset_offsets_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(offsets, "main_reset_offsets", rec)
    assert cli.main(["reset-offsets", "--to", "2h", "--topic", "edit-events",
                     "--topic", "settled-examples", "--group", "g1", "--execute",
                     "--broker", "b:1", "--topic-prefix", "run1-"]) == 42
    ns = rec.ns
    assert (ns.to, ns.topic, ns.group, ns.execute) == (
        "2h", ["edit-events", "settled-examples"], "g1", True)
    s = settings_mod.from_args(ns, environ={})
    assert (s.broker, s.topic_prefix) == ("b:1", "run1-")


def test_reset_offsets_is_a_dry_run_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(offsets, "main_reset_offsets", rec)
    cli.main(["reset-offsets", "--to", "earliest"])
    assert rec.ns.execute is False and rec.ns.topic == [] and rec.ns.group is None


def test_a_pipeline_reset_covers_the_settle_stages_eval_and_faust_groups() -> None:
    s = settings_mod.Settings(app_id="app", topic_prefix="p-")
    stage_topics = ["p-settled-examples", "p-student-samples", "p-scored-examples", "p-repair",
                    "p-model-retry"]
    assert offsets.pipeline_groups(s, []) == [("app", []), ("app-settle", ["p-edit-events"]),
                                              ("app-stages", stage_topics),
                                              ("app-eval", ["p-settled-examples"])]
    assert offsets.pipeline_groups(s, ["p-edit-events", "p-settled-examples",
                                       "p-model-retry", "p-training-records"]) == [
        ("app", ["p-training-records"]), ("app-settle", ["p-edit-events"]),
        ("app-stages", ["p-settled-examples", "p-model-retry"]),
        ("app-eval", ["p-settled-examples"])]
    assert offsets.pipeline_groups(s, ["p-edit-events"]) == [("app-settle", ["p-edit-events"])]


def test_reset_offsets_needs_to(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["reset-offsets"])
    assert exc.value.code == 2
    assert "--to" in capsys.readouterr().err


def test_export_dispatch_uses_main_export(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(export, "main_export", rec)
    assert cli.main(["export", "--out", "ds", "--since", "1d", "--pipeline-version", "v3",
                     "--format", "parquet", "--rejected", "--broker", "b:1"]) == 42
    ns = rec.ns
    assert (ns.out, ns.since, ns.fmt, ns.rejected, ns.restart) == (
        "ds", "1d", "parquet", True, False)
    assert settings_mod.from_args(ns, environ={}).pipeline_version == "v3"


def test_export_rejects_unknown_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", "--out", "ds", "--format", "csv"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_report_dir_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(report, "main_report", rec)
    monkeypatch.setattr(promreport, "render_prometheus", must_not_run)
    assert cli.main(["report", "some/export", "--no-plots"]) == 42
    assert rec.ns.dir == "some/export" and rec.ns.no_plots is True


def test_report_prometheus_dispatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, Path, float]] = []

    def fake_render(url: str, out: Path, *, lookback_s: float = 0.0) -> Path:
        calls.append((url, out, lookback_s))
        return out

    monkeypatch.setattr(promreport, "render_prometheus", fake_render)
    monkeypatch.setattr(report, "main_report", must_not_run)
    png = tmp_path / "dash.png"
    assert cli.main(["report", "--prometheus", "http://prom:9090", "--out", str(png),
                     "--lookback", "1h30m"]) == 0
    assert calls == [("http://prom:9090", png, 5400.0)]
    assert str(png) in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["report"], "give an export directory DIR"),
    (["report", "--prometheus", "http://p:9090"], "--prometheus needs --out"),
    (["report", "d", "--prometheus", "http://p:9090", "--out", "x.png"], "not both"),
    (["report", "d", "--out", "x.png"], "--out goes with --prometheus"),
    (["report", "--prometheus", "http://p:9090", "--out", "x.png", "--lookback", "soon"],
     "not a duration"),
])
def test_report_usage_errors(argv: list[str], message: str,
                             monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(report, "main_report", must_not_run)
    monkeypatch.setattr(promreport, "render_prometheus", must_not_run)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: editstream report" in err and message in err


def test_gateway_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(gateway, "main_gateway", rec)
    assert cli.main(["gateway", "--port", "9999", "--broker", "b:1", "--rate", "50",
                     "--burst", "1000"]) == 42
    token = "0123456789abcdef"  # the gateway wants at least 16 characters
    cfg = gateway.config_from_args(rec.ns, environ={"EDITSTREAM_GATEWAY_TOKENS": f"zed:{token}"})
    assert (cfg.port, cfg.rate, cfg.burst, cfg.tokens) == (9999, 50.0, 1000, (("zed", token),))
    assert settings_mod.from_args(rec.ns, environ={}).broker == "b:1"


def test_gateway_without_tokens_exits_2(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The real main_gateway: fails closed before touching the broker."""
    monkeypatch.delenv("EDITSTREAM_GATEWAY_TOKENS", raising=False)
    monkeypatch.delenv("EDITSTREAM_GATEWAY_TOKENS_FILE", raising=False)
    assert cli.main(["gateway", "--broker", "127.0.0.1:1"]) == 2
    assert "no client tokens" in capsys.readouterr().err


def test_bad_when_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    """The real main_replay: a WHEN it cannot parse is exit 2 with the accepted forms."""
    assert cli.main(["replay", "--broker", "127.0.0.1:1", "--from", "yesterday-ish"]) == 2
    assert "is not a WHEN" in capsys.readouterr().err


# --------------------------------------------------------------------------- process


def test_module_help_lists_every_subcommand() -> None:
    proc = subprocess.run([sys.executable, "-m", "editstream.cli", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for command in COMMANDS:
        assert command in proc.stdout, command


def test_a_command_imports_only_its_own_module() -> None:
    """Fast startup: `editstream worker` does not import the gateway, replay, report, ..."""
    code = ("import sys; from editstream import cli; cli.build_parser('worker'); "
            "print(','.join(m for m in ('editstream.gateway.server', 'editstream.replay', "
            "'editstream.topics.offsets', 'editstream.dataset.export', "
            "'editstream.dataset.report', 'editstream.dataset.promreport', "
            "'editstream.simulator.server', 'editstream.evaluation.scorecard', "
            "'streams.scorecard', 'scipy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_local_model_serve_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["local-model", "serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--slots", "--port", "--lora", "--threads", "--ctx-per-slot"):
        assert flag in out, flag
