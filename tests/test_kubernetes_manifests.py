"""The Kubernetes manifests in ``deploy/kubernetes``: valid against a current Kubernetes schema
(``kubernetes-validate``, strict: no unknown fields), and consistent with the server they run.

Consistency checked against the code, not against copied numbers: the probes ask endpoints the
app serves, the grace period outlasts preStop plus the drain the settings allow, the CPU request
equals the shards, the ingress timeouts exceed the idle timeout, and the HPA's custom metric is
one the server exports.
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from server.metrics import Metrics
from server.settings import Settings

MANIFESTS = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
KUBERNETES = "1.37.0"  # the newest schema kubernetes-validate ships


def _documents() -> dict[str, dict]:
  """kind -> manifest, for every file the kustomization lists."""
  listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
  assert sorted(listed) == sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
  return {doc["kind"]: doc for name in listed for doc in yaml.safe_load_all((MANIFESTS / name).read_text())}


DOCUMENTS = _documents()


@pytest.mark.parametrize("kind", sorted(DOCUMENTS))
def test_every_manifest_is_valid_against_the_kubernetes_schema(kind: str) -> None:
  kubernetes_validate.validate(DOCUMENTS[kind], KUBERNETES, strict=True)


def test_an_invalid_manifest_is_refused() -> None:
  """The check can fail: a misspelt field is an error in strict mode."""
  broken = {**DOCUMENTS["Service"], "spec": {**DOCUMENTS["Service"]["spec"], "selectr": {}}}
  with pytest.raises(kubernetes_validate.ValidationError, match=r"\('selectr' was unexpected\)"):
    kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def _container() -> dict:
  return DOCUMENTS["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def _env() -> dict[str, str]:
  """The container's plain settings (a value from a Secret is not one to check)."""
  return {item["name"]: item["value"] for item in _container()["env"] if "value" in item}


def test_the_deployment_probes_drains_and_requests_what_the_server_needs() -> None:
  container, env = _container(), _env()
  settings = Settings(**{name.removeprefix("CARFAC_").lower(): value for name, value in env.items()})
  assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
  assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
  assert container["ports"][0]["containerPort"] == 8000 and settings.host == "0.0.0.0"
  pod = DOCUMENTS["Deployment"]["spec"]["template"]["spec"]
  pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
  assert pod["terminationGracePeriodSeconds"] > pre_stop + settings.shutdown_timeout_s + 5
  assert float(container["resources"]["requests"]["cpu"]) == settings.shards
  assert container["volumeMounts"][0]["mountPath"] == str(settings.compile_cache_dir)


def test_the_ingress_outlasts_the_idle_timeout_and_the_hpa_scales_on_an_exported_metric() -> None:
  annotations = DOCUMENTS["Ingress"]["metadata"]["annotations"]
  idle = Settings(idle_timeout_s=float(_env()["CARFAC_IDLE_TIMEOUT_S"])).idle_timeout_s
  for key in ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"):
    assert float(annotations[key]) > idle
  body = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
  assert float(body.removesuffix("m")) * 2**20 > Settings().max_message_bytes
  exported = set(re.findall(r"^# TYPE (\w+) ", Metrics().render().decode(), re.MULTILINE))
  pods_metrics = [
    m["pods"]["metric"]["name"] for m in DOCUMENTS["HorizontalPodAutoscaler"]["spec"]["metrics"] if m["type"] == "Pods"
  ]
  assert pods_metrics and set(pods_metrics) <= exported
  assert any(m["type"] == "Resource" for m in DOCUMENTS["HorizontalPodAutoscaler"]["spec"]["metrics"])  # CPU fallback
  rules = DOCUMENTS["ConfigMap"]["data"]["config.yaml"]
  assert all(name in rules for name in pods_metrics)  # the adapter exposes what the HPA reads


def test_the_resume_key_comes_from_an_optional_secret_so_replicas_share_it() -> None:
  [item] = [item for item in _container()["env"] if item["name"] == "CARFAC_RESUME_KEY"]
  secret = item["valueFrom"]["secretKeyRef"]
  assert secret["optional"] is True and secret["name"] and secret["key"]
  assert "resume_key" in Settings.model_fields
