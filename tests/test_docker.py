"""docker/: the image, the compose file and the cluster-launcher file agree with each other and
with the project (image name, pinned torch, install command, ports, environment, security)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
GCS_PORT, DASHBOARD_PORT, MLFLOW_PORT = 6379, 8265, 5000


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _cluster() -> dict:
    return yaml.safe_load((DOCKER / "cluster.yaml").read_text())


def _dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def test_the_image_installs_the_pinned_torch_and_the_project():
    pins = dict(re.findall(r'"(torch|torchvision)==([^"]+)"', (REPO / "pyproject.toml").read_text()))
    dockerfile = _dockerfile()
    assert f"torch=={pins['torch']}" in dockerfile and f"torchvision=={pins['torchvision']}" in dockerfile
    assert re.search(r"^FROM nvidia/cuda:\S+", dockerfile, re.MULTILINE)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    install = re.search(r"pip install -e '\.\[(\w+)\]'", dockerfile)
    assert install and install.group(1) in extras and any("psycopg2" in d for d in extras[install.group(1)])
    for folder in ("provpt_core", "orchestrator", "studies"):
        assert f"COPY {folder} ./{folder}" in dockerfile
    exposed = {int(p) for p in re.findall(r"\d+", re.search(r"^EXPOSE (.+)$", dockerfile, re.MULTILINE).group(1))}
    assert exposed == {GCS_PORT, DASHBOARD_PORT, MLFLOW_PORT}


def test_compose_and_cluster_file_use_the_same_image_and_ports():
    compose, cluster = _compose(), _cluster()
    services = compose["services"]
    image = services["ray-head"]["image"]
    assert {services[s]["image"] for s in ("ray-head", "ray-worker", "mlflow")} == {image}
    assert cluster["docker"]["image"] == image
    assert services["mlflow"]["build"]["dockerfile"] == "docker/Dockerfile"
    head = services["ray-head"]["command"]
    assert f"--port={GCS_PORT}" in head and f"--dashboard-port={DASHBOARD_PORT}" in head
    assert f"--address=ray-head:{GCS_PORT}" in services["ray-worker"]["command"]
    assert f"--port {MLFLOW_PORT}" in services["mlflow"]["command"]
    assert any(f"--port={GCS_PORT}" in c and f"--dashboard-port={DASHBOARD_PORT}" in c for c in cluster["head_start_ray_commands"])
    assert any(f":{GCS_PORT}" in c for c in cluster["worker_start_ray_commands"])
    workers_gpu = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert workers_gpu["capabilities"] == ["gpu"] and "--gpus all" in cluster["docker"]["run_options"]


def test_nodes_share_the_environment_the_studies_read():
    compose, cluster = _compose(), _cluster()
    env = compose["services"]["ray-head"]["environment"]
    assert compose["services"]["ray-worker"]["environment"] == env
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{MLFLOW_PORT}"
    options = " ".join(cluster["docker"]["run_options"])
    for name in ("RAY_AUTH_MODE", "PROVPT_OUTPUT", "PROVPT_CACHE", "HF_HOME", "VTAB_ROOT", "FGVC_ROOT", "MLFLOW_TRACKING_URI"):
        assert name in env and f"-e {name}=" in options, name
    studies = (REPO / "studies" / "vtab_full.yaml").read_text() + (REPO / "studies" / "fgvc_full.yaml").read_text()
    for name in ("PROVPT_OUTPUT", "VTAB_ROOT", "FGVC_ROOT", "MLFLOW_TRACKING_URI"):
        assert "${" + name in studies, name
    volumes = {v.split(":")[1] for v in compose["services"]["ray-worker"]["volumes"]}
    assert {env["PROVPT_OUTPUT"], "/data", "/models"} <= volumes  # what the env points at is mounted


def test_security_defaults():
    compose, cluster = _compose(), _cluster()
    for service in compose["services"].values():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), mapping  # published on loopback only
    env = compose["services"]["ray-head"]["environment"]
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "-e RAY_AUTH_MODE=token" in cluster["docker"]["run_options"]
    assert any("--dashboard-host=127.0.0.1" in c for c in cluster["head_start_ray_commands"])
    for service in compose["services"].values():  # every credential comes from the environment
        for name, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|TOKEN|SECRET", name) and name != "RAY_AUTH_MODE":
                assert str(value).startswith("${"), name
    assert not any(re.search("TOKEN=|PASSWORD=", option) for option in cluster["docker"]["run_options"])
