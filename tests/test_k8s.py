"""deploy/k8s renders with kubectl's kustomize, validates against Kubernetes' schemas, and holds together.

Each overlay is rendered by ``kubectl kustomize`` and every object is checked
against the OpenAPI schemas that ``kubernetes-validate`` carries (strict: an
unknown field is an error). The two custom resources (KEDA's ScaledObject,
prometheus-operator's ServiceMonitor) have no schema there: the HPA that KEDA
makes from the ScaledObject is validated instead, and the cross-references
the API server cannot check (selectors, named ports, shutdown budget,
the autoscaling query's form) are tested here. The query's metric names are
evaluated against real servers by `make rehearse-scale`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
# Oldest and newest Kubernetes the manifests are meant for; every field must exist in both.
KUBERNETES_VERSIONS = ("1.27", kubernetes_validate.latest_version())
CUSTOM_KINDS = {"ScaledObject": "keda.sh/v1alpha1", "ServiceMonitor": "monitoring.coreos.com/v1"}


def kubectl() -> str:
    """kubectl's path; a missing kubectl skips here and fails in CI (deploy/install_tools.sh installs it)."""
    path = shutil.which("kubectl")
    if path is None:
        message = "kubectl not found: run `bash deploy/install_tools.sh kubectl`"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must validate deploy/k8s)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    out = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / request.param)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return request.param, [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def only(docs: list[dict], kind: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def container(docs: list[dict]) -> dict:
    [c] = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def named_port(c: dict, name: str | int) -> int:
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert name in ports, f"port {name!r} is not one of the container's named ports {sorted(ports)}"
    return ports[name]


def flag(c: dict, name: str) -> str:
    values = [a.split("=", 1)[1] for a in c["args"] if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name}= given {len(values)} times in {c['args']}"
    return values[0]


def keda_hpa(scaled_object: dict) -> dict:
    """The autoscaling/v2 HPA that KEDA creates for a ScaledObject (fields it copies through)."""
    so = scaled_object["spec"]
    target = so["scaleTargetRef"]
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"keda-hpa-{scaled_object['metadata']['name']}",
                     "namespace": scaled_object["metadata"]["namespace"]},
        "spec": {
            "scaleTargetRef": {"apiVersion": target.get("apiVersion", "apps/v1"),
                               "kind": target.get("kind", "Deployment"), "name": target["name"]},
            "minReplicas": so["minReplicaCount"], "maxReplicas": so["maxReplicaCount"],
            "behavior": so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
            "metrics": [{"type": "External", "external": {
                "metric": {"name": f"s{i}-{t['type']}"},
                "target": {"type": t["metricType"], t["metricType"][0].lower() + t["metricType"][1:]:
                           t["metadata"]["threshold"]}}} for i, t in enumerate(so["triggers"])],
        },
    }


def validate(doc: dict, what: str) -> None:
    for version in KUBERNETES_VERSIONS:
        problem = None
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:  # the short message, not the whole schema
            problem = f"{'.'.join(map(str, exc.path))}: {exc.message}"
        if problem:
            pytest.fail(f"{what} {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {problem}")


def test_every_object_validates_against_the_kubernetes_schemas(rendered):
    overlay, docs = rendered
    checked = []
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] == CUSTOM_KINDS[doc["kind"]]
            continue
        validate(doc, overlay)
        checked.append(doc["kind"])
    validate(keda_hpa(only(docs, "ScaledObject")), f"{overlay}, made by KEDA:")
    print(f"{overlay}: {', '.join(checked)} + KEDA's HPA valid for Kubernetes "
          f"{', '.join(KUBERNETES_VERSIONS)}")
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= set(checked)


def test_selectors_and_named_ports_reach_the_server_pods(rendered):
    _, docs = rendered
    deployment = only(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    c = container(docs)

    def selects(selector: dict) -> bool:
        return selector.items() <= pod_labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    assert selects(only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    services = [d for d in docs if d["kind"] == "Service"]
    assert services
    for service in services:
        assert selects(service["spec"]["selector"]), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            named_port(c, port["targetPort"])
    assert only(docs, "ScaledObject")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    monitor = only(docs, "ServiceMonitor")["spec"]
    wanted = monitor["selector"]["matchLabels"].items()
    scraped = [s for s in services if wanted <= s["metadata"]["labels"].items()
               and any(p["name"] == monitor["endpoints"][0]["port"] for p in s["spec"]["ports"])]
    assert scraped, "the ServiceMonitor selects no Service with its metrics port"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == named_port(c, "metrics")


def test_health_comes_from_the_guard_and_shutdown_fits_the_grace_period(rendered):
    _, docs = rendered
    c = container(docs)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert "--host=0.0.0.0" in c["command"] + c["args"], "rtmo-serve binds loopback: no probe reaches it"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["startupProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert named_port(c, c[probe]["httpGet"]["port"]) == 8003, f"{probe} must ask rtmo-serve's guard"
    sleep_cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep_cmd[0] == "sleep"
    needed = int(sleep_cmd[1]) + int(flag(c, "exit-timeout-secs"))
    assert pod["terminationGracePeriodSeconds"] > needed, (
        f"grace {pod['terminationGracePeriodSeconds']} s leaves no time after preStop + Triton's "
        f"exit timeout ({needed} s): in-flight requests would be killed")
    rollout = only(docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert rollout["maxUnavailable"] == 0


def test_model_repository_is_defined_for_the_overlay(rendered):
    overlay, docs = rendered
    c = container(docs)
    env = {e["name"]: e for e in c.get("env", [])}
    for var in re.findall(r"\$\((\w+)\)", " ".join(c["args"])):
        assert var in env, f"{overlay}: $({var}) in args but not in env"
    repository = env["MODEL_REPOSITORY"]["value"]
    limits = c["resources"]["limits"]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == 1
        product = pod["nodeSelector"]["nvidia.com/gpu.product"]
        assert repository.startswith(("s3://", "gs://", "as://"))
        assert repository.rstrip("/").endswith(product), "a TensorRT plan serves only the GPU it was built on"
        secrets = {e["valueFrom"]["secretKeyRef"]["key"] for e in env.values() if "valueFrom" in e}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secrets
        assert only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":gpu")
    else:
        assert "nvidia.com/gpu" not in limits
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volume = {v["name"]: v for v in pod["volumes"]}[mounts[repository]]
        claim = volume["persistentVolumeClaim"]["claimName"]
        assert claim in {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
        assert c["image"].endswith(":cpu")
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/dev/shm"}


def test_autoscaler_query_scales_on_a_per_request_average(rendered):
    _, docs = rendered
    [trigger] = only(docs, "ScaledObject")["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    # a per-request average: the HPA must compare it as a value, not divide it by the pod count
    assert trigger["metricType"] == "Value"
    namespaces = set(re.findall(r'namespace="([^"]+)"', trigger["metadata"]["query"]))
    assert namespaces == {only(docs, "Deployment")["metadata"]["namespace"]}
    assert float(trigger["metadata"]["threshold"]) > 0
