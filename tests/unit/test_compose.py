"""The deployment files agree with each other and with the Compose specification.

No Docker engine is needed: docker-compose.yml is validated against the Compose
Specification JSON schema (tests/data/compose_spec.json, as shipped by
docker-compose 1.29.2), then checked for what the schema cannot say: health
checks behind every ``service_healthy`` dependency, bind mounts that exist, the
scale profile's load balancer forwarding WebSocket upgrades, and Prometheus
scraping the app.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _services(profile: str | None = None) -> dict[str, dict[str, Any]]:
    """Services active with no profile (None) or with ``profile`` enabled."""
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return {
        name: svc
        for name, svc in services.items()
        if not svc.get("profiles") or (profile is not None and profile in svc["profiles"])
    }


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests/data/compose_spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_compose_file() -> None:
    # Guards the test above: a schema that accepted anything would prove nothing.
    schema = json.loads((ROOT / "tests/data/compose_spec.json").read_text())
    broken = _compose()
    broken["services"]["app"]["depends_on"] = {"postgres": {"condition": "when_ready"}}
    broken["services"]["redis"]["healthcheck"]["retries"] = "many"
    errors = list(jsonschema.Draft201909Validator(schema).iter_errors(broken))
    assert len(errors) >= 2


def test_default_stack_has_every_component() -> None:
    assert {"app", "postgres", "redis", "keycloak", "prometheus", "migrate"} <= set(_services())
    assert not {"app2", "nginx"} & set(_services()), "the second replica belongs to the scale profile"
    assert {"app2", "nginx"} <= set(_services("scale"))


@pytest.mark.parametrize("profile", [None, "scale"])
def test_dependencies_exist_and_healthy_ones_have_health_checks(profile: str | None) -> None:
    services = _services(profile)
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on {dep}, which is not in profile {profile}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy but it has none"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} is a one-shot step and must not restart"


def test_replicas_wait_for_migrations_and_services() -> None:
    services = _services("scale")
    for name in ("app", "app2"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        for dep in ("postgres", "redis", "keycloak"):
            assert deps[dep]["condition"] == "service_healthy", f"{name} must wait for {dep}"
        assert services[name]["command"] == ["python", "-m", "app", "serve"]
        assert "healthcheck" in services[name]
    assert services["migrate"]["command"] == ["python", "-m", "app", "migrate"]
    for name in ("postgres", "redis", "keycloak", "app", "prometheus"):
        assert "healthcheck" in services[name], name


def test_app_environment_points_at_the_compose_services() -> None:
    env = _services()["app"]["environment"]
    assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert env["KEYCLOAK_BASE_URL"] == "http://keycloak:8080"
    assert env["KEYCLOAK_REALM"] and env["KEYCLOAK_CLIENT_ID"]
    keycloak = _services()["keycloak"]
    assert keycloak["command"] == ["start-dev", "--import-realm"]
    assert "./keycloak:/opt/keycloak/data/import:ro" in keycloak["volumes"]


def test_bind_mounts_exist() -> None:
    for name, svc in _services("scale").items():
        for volume in svc.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_prometheus_scrapes_every_replica() -> None:
    config = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        if job.get("metrics_path", "/metrics") == "/metrics"
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert {"app:8000", "app2:8000"} <= targets
    mounts = _services()["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_load_balancer_forwards_websocket_upgrades_to_both_replicas() -> None:
    conf = (ROOT / "deploy/nginx.conf").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    assert re.search(r"server\s+app:8000\b", code)
    assert re.search(r"server\s+app2:8000\b", code)
    assert re.search(r"proxy_http_version\s+1\.1;", code)
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", code)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade;", code)
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade", code)
    # Sockets live long: the default 60 s read timeout would cut idle dashboards.
    timeout = re.search(r"proxy_read_timeout\s+(\d+)s;", code)
    assert timeout and int(timeout.group(1)) >= 300
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in _services("scale")["nginx"]["volumes"]


def _dockerfile_instructions() -> list[str]:
    """Dockerfile instructions with comments dropped and continuation lines joined."""
    text = "\n".join(
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")
    )
    return [" ".join(part.split()) for part in text.replace("\\\n", " ").splitlines() if part.strip()]


def test_dockerfile_runs_as_non_root_with_health_check() -> None:
    lines = _dockerfile_instructions()
    assert lines[0] == "FROM python:3.11-slim"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert "EXPOSE 8000" in lines
    health = next(line for line in lines if line.startswith("HEALTHCHECK "))
    assert "CMD" in health and "127.0.0.1:8000/health" in health
    cmd = next(line for line in lines if line.startswith("CMD "))
    assert cmd.index("python -m app migrate") < cmd.index("python -m app serve")
