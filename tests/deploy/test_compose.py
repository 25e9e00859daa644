"""deploy/docker-compose.yml, structurally (deploy/validate compose runs the real loader)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.metric_names import REPO

pytestmark = pytest.mark.fast

DEPLOY = REPO / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_it_has_every_service_of_the_design() -> None:
    expected = {
        "api",
        "worker",
        "migrate",
        "nginx",
        "postgres",
        "redis",
        "elasticsearch",
        "vllm",
        "triton",
        "prometheus",
        "grafana",
        "redis-exporter",
        "elasticsearch-exporter",
    }
    assert expected <= set(SERVICES)


def test_every_service_has_an_image_or_a_build() -> None:
    for name, service in SERVICES.items():
        assert service.get("image") or service.get("build"), name


def test_the_api_runs_two_replicas_behind_readyz_with_env_from_dotenv() -> None:
    api = SERVICES["api"]
    assert api["deploy"]["replicas"] == 2
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert api["env_file"] == [".env"]
    assert api["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert api["command"][:2] == ["gunicorn", "config.asgi:application"]
    assert "deploy/gunicorn.conf.py" in api["command"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_the_worker_and_the_one_shot_migrate_share_the_api_image() -> None:
    image = SERVICES["api"]["image"]
    assert SERVICES["worker"]["image"] == image
    assert SERVICES["migrate"]["image"] == image
    assert SERVICES["worker"]["command"][-1] == "knowledge_worker"
    assert SERVICES["migrate"]["command"][-2:] == ["migrate", "--noinput"]
    assert SERVICES["migrate"]["restart"] == "no"
    # Single-process commands must not use the multiprocess metrics directory.
    assert SERVICES["worker"]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == ""
    assert SERVICES["migrate"]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == ""


def test_redis_has_aof_and_allkeys_lru() -> None:
    command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy allkeys-lru" in command


def test_elasticsearch_is_single_node() -> None:
    assert SERVICES["elasticsearch"]["environment"]["discovery.type"] == "single-node"


def test_model_servers_reserve_a_gpu() -> None:
    assert SERVICES["vllm"]["image"].startswith("vllm/vllm-openai:")
    for name in ("vllm", "triton"):
        devices = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
    triton = SERVICES["triton"]
    assert "./triton/model_repository:/models:ro" in triton["volumes"]
    assert "nvcr.io/nvidia/tritonserver" in (DEPLOY / "triton" / "Dockerfile").read_text()


def test_grafana_and_prometheus_mount_the_provisioning() -> None:
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in SERVICES["grafana"]["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in SERVICES["grafana"]["volumes"]
    assert "./prometheus/alerts:/etc/prometheus/alerts:ro" in SERVICES["prometheus"]["volumes"]


def test_every_bind_mount_source_and_build_context_exists() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name}: named volume {source} is not declared"
        build = service.get("build")
        if build:
            context = DEPLOY / build["context"]
            assert context.is_dir(), f"{name}: {context}"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_healthchecks_and_depends_on_conditions_agree() -> None:
    for name, service in SERVICES.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency}'s health"


def test_the_variables_compose_interpolates_are_in_env_example() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    example = (DEPLOY / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    assert used - listed == set()


def test_jaeger_receives_the_platforms_traces() -> None:
    jaeger = SERVICES["jaeger"]
    assert "./jaeger/config.yaml:/etc/jaeger/config.yaml:ro" in jaeger["volumes"]
    assert jaeger["command"] == ["--config", "/etc/jaeger/config.yaml"]
    assert {"4317", "4318"} <= set(jaeger["expose"])
    assert "jaeger" in SERVICES["api"]["depends_on"]
    # api and worker read OTEL_* from .env (x-app's env_file): the example turns tracing on, to this Jaeger.
    example = (DEPLOY / ".env.example").read_text()
    assert re.search(r"^OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318$", example, re.MULTILINE)
    assert SERVICES["worker"]["env_file"] == SERVICES["api"]["env_file"] == [".env"]
