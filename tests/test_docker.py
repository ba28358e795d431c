"""docker/: the compose file as `docker-compose config` resolves it, and the model server's Dockerfile.

No Docker engine runs on our machines; `docker-compose config` needs none (Debian: `apt-get install
docker-compose`). The compose tests skip only when neither `docker-compose` nor `docker compose` exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from latentsearch.mappings.ml_commons import DEFAULT_SERVER_URL

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
PASSWORD = "Lat3nt!search-Test"


def compose_cmd() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def compose_config(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = compose_cmd()
    if cmd is None:
        pytest.skip("neither `docker-compose` nor `docker compose` is installed (Debian: apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSEARCH_", "LATENTSEARCH_", "COMPOSE_"))}
    env.update(env_extra)
    return subprocess.run([*cmd, "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True, text=True,
                          env=env, cwd=DOCKER, timeout=60)


@pytest.fixture(scope="module")
def resolved() -> dict:
    proc = compose_config({"OPENSEARCH_INITIAL_ADMIN_PASSWORD": PASSWORD})
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def unescape(value: str) -> str:
    return value.replace("$$", "$")  # `config` prints values re-escaped for compose


def test_services_images_and_healthchecks(resolved: dict) -> None:
    services = resolved["services"]
    assert set(services) == {"opensearch", "dashboards", "latentsearch"}
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    version = services["opensearch"]["image"].split(":")[1]
    assert re.match(r"^(2\.19|3)\.", version), version
    assert services["dashboards"]["image"].endswith(":" + version), "Dashboards must match the OpenSearch version"
    assert services["dashboards"]["depends_on"]["opensearch"]["condition"] == "service_healthy"
    assert services["latentsearch"]["depends_on"]["opensearch"]["condition"] == "service_healthy"
    assert services["latentsearch"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert Path(services["latentsearch"]["build"]["context"]).resolve() == REPO


def test_security_on_with_the_documented_password(resolved: dict) -> None:
    env = resolved["services"]["opensearch"]["environment"]
    assert env["OPENSEARCH_INITIAL_ADMIN_PASSWORD"] == PASSWORD
    assert "plugins.security.disabled" not in env and "DISABLE_SECURITY_PLUGIN" not in env
    server_env = resolved["services"]["latentsearch"]["environment"]
    assert server_env["LATENTSEARCH_BACKEND__AUTH__PASSWORD"] == PASSWORD
    assert server_env["LATENTSEARCH_BACKEND__URL"].startswith("https://opensearch:9200")
    assert "OPENSEARCH_INITIAL_ADMIN_PASSWORD" in (DOCKER / "README.md").read_text()


def test_missing_password_is_refused_with_a_pointer_to_the_readme() -> None:
    proc = compose_config({})
    assert proc.returncode != 0
    assert "OPENSEARCH_INITIAL_ADMIN_PASSWORD" in proc.stderr and "docker/README.md" in proc.stderr


def test_ml_commons_settings_let_connectors_reach_the_server(resolved: dict) -> None:
    env = resolved["services"]["opensearch"]["environment"]
    assert env["plugins.ml_commons.only_run_on_ml_node"] == "false"
    assert env["plugins.ml_commons.connector.private_ip_enabled"] == "true"
    regex = re.compile(unescape(env["plugins.ml_commons.trusted_connector_endpoints_regex"]))
    # the URL `latentsearch opensearch-setup` puts in the connectors by default is the compose service
    for route in ("/v1/embeddings", "/extract", "/mentions"):
        assert regex.match(DEFAULT_SERVER_URL + route)
    assert not regex.match("http://elsewhere:8080/v1/embeddings")
    server = resolved["services"]["latentsearch"]
    host, port = re.match(r"^http://([^:/]+):(\d+)$", DEFAULT_SERVER_URL).groups()  # type: ignore[union-attr]
    assert host == "latentsearch" and host in resolved["services"]
    assert server["command"][server["command"].index("--port") + 1] == port
    assert server["command"][server["command"].index("--host") + 1] == "0.0.0.0"


# ---------------------------------------------------------------- Dockerfile (static: no engine here)


def dockerfile_lines() -> list[str]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_dockerfile_installs_cpu_torch_first_then_the_pinned_package() -> None:
    lines = dockerfile_lines()
    torch_at = next(i for i, line in enumerate(lines) if "torch==2.13.0" in line and line.startswith("RUN pip"))
    pkg_at = next(i for i, line in enumerate(lines) if "-c constraints.txt" in line)
    assert torch_at < pkg_at
    assert "--index-url" in lines[torch_at] and any("whl/cpu" in line for line in lines if line.startswith("ARG"))
    pins = (REPO / "constraints.txt").read_text()
    assert "torch==2.13.0" in pins


def test_dockerfile_copies_every_package_folder() -> None:
    """A new subpackage folder in pyproject must also reach the image."""
    copied = {line.split()[1] for line in dockerfile_lines() if line.startswith("COPY")}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = {p.split("/")[0] for p in pyproject["tool"]["setuptools"]["package-dir"].values()}
    assert folders <= copied, f"not copied into the image: {sorted(folders - copied)}"
    for src in copied:
        assert (REPO / src).exists(), src
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored  # the build context is the repository root


def test_dockerfile_serves_on_all_interfaces_with_a_healthcheck() -> None:
    lines = dockerfile_lines()
    assert any(line.startswith("HEALTHCHECK") and "/healthz" in line for line in lines)
    cmd = next(line for line in lines if line.startswith("CMD"))
    assert '"serve"' in cmd and '"0.0.0.0"' in cmd and '"8080"' in cmd
