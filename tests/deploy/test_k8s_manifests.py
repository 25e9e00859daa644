"""What the Kubernetes manifests must say (schemas: deploy/validate k8s)."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.metric_names import REPO

pytestmark = pytest.mark.fast

K8S = REPO / "deploy" / "k8s"
HEARTBEAT_S = 20  # CHAT_WS_HEARTBEAT_S default


def resources() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


R = resources()


def container(kind: str, name: str, index: int = 0) -> dict:
    return R[(kind, name)]["spec"]["template"]["spec"]["containers"][index]


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.template.yaml"}
    assert listed == files


def test_api_probes_resources_and_security() -> None:
    api = container("Deployment", "api")
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["resources"]["requests"] and api["resources"]["limits"]
    pod = R[("Deployment", "api")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert api["securityContext"]["allowPrivilegeEscalation"] is False


def test_api_metrics_directory_is_an_emptydir() -> None:
    api = container("Deployment", "api")
    env = {e["name"]: e for e in api["env"]}
    path = env["PROMETHEUS_MULTIPROC_DIR"]["value"]
    mount = next(m for m in api["volumeMounts"] if m["mountPath"] == path)
    volume = next(
        v for v in R[("Deployment", "api")]["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    assert "emptyDir" in volume
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_single_process_commands_do_not_use_the_multiprocess_directory() -> None:
    for kind, name in (("Deployment", "worker"), ("Job", "migrate")):
        env = {e["name"]: e.get("value") for e in container(kind, name).get("env", [])}
        assert env.get("PROMETHEUS_MULTIPROC_DIR") == "", name


def test_hpa_scales_on_cpu_and_requests_per_second() -> None:
    hpa = R[("HorizontalPodAutoscaler", "api")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Resource"]["resource"]["target"]["averageUtilization"] == 70
    assert metrics["Pods"]["pods"]["metric"]["name"] == "http_requests_per_second"
    assert R[("PodDisruptionBudget", "api")]["spec"]["minAvailable"] >= 1


def test_streaming_ingress_outlasts_the_heartbeat_and_does_not_buffer() -> None:
    ingress = R[("Ingress", "api-streaming")]
    notes = ingress["metadata"]["annotations"]
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > HEARTBEAT_S
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) > HEARTBEAT_S
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert {"/ws/", "/v1/chat/completions"} <= paths
    assert any(p.startswith("/api/") and "stream" in p for p in paths)


def test_statefulsets_have_headless_services() -> None:
    for name in ("redis", "elasticsearch"):
        sts = R[("StatefulSet", name)]
        service = R[("Service", sts["spec"]["serviceName"])]
        assert service["spec"]["clusterIP"] == "None", name
    redis_args = " ".join(container("StatefulSet", "redis")["args"])
    assert "--appendonly yes" in redis_args and "allkeys-lru" in redis_args


def test_model_servers_request_gpus_and_have_services() -> None:
    for name in ("vllm", "triton"):
        res = container("Deployment", name)["resources"]
        assert res["limits"]["nvidia.com/gpu"] == "1", name
        assert ("Service", name) in R
    ports = {p["port"] for p in R[("Service", "triton")]["spec"]["ports"]}
    assert 8002 in ports


def test_fluent_bit_daemonset_reads_its_configmap() -> None:
    ds = R[("DaemonSet", "fluent-bit")]
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    config = R[("ConfigMap", volumes["config"]["configMap"]["name"])]
    assert "fluent-bit.conf" in config["data"]
    assert "Merge_Log           On" in config["data"]["fluent-bit.conf"]


def test_config_and_secret_templates_feed_the_app() -> None:
    api = container("Deployment", "api")
    refs = {next(iter(ref.values()))["name"] for ref in api["envFrom"]}
    assert refs == {"vh-config", "vh-secrets"}
    secret = R[("Secret", "vh-secrets")]
    assert {"SECRET_KEY", "DATABASE_URL"} <= set(secret["stringData"])


def test_jaeger_runs_the_shared_config_and_the_app_sends_it_traces() -> None:
    config = R[("ConfigMap", "jaeger-config")]["data"]["config.yaml"]
    assert config == (REPO / "deploy" / "jaeger" / "config.yaml").read_text()
    jaeger = container("Deployment", "jaeger")
    assert jaeger["args"] == ["--config", "/etc/jaeger/config.yaml"]
    assert jaeger["readinessProbe"]["httpGet"]["port"] == "health"
    ports = {p["port"] for p in R[("Service", "jaeger")]["spec"]["ports"]}
    assert {4317, 4318, 16686} <= ports
    app = R[("ConfigMap", "vh-config")]["data"]
    assert app["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger.vacant-house-chat.svc.cluster.local:4318"
    assert 0 < float(app["OTEL_TRACES_SAMPLER_ARG"]) <= 1
