"""The deployment files in deploy/: systemd units that systemd itself accepts, and a compose
file whose topology keeps the promises of docs/several-machines.md. (No Docker engine runs on
the test machines, so the image itself is not built here.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from minitoolai.images.settings import ImagesSettings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_units_verify(unit, tmp_path):
    # systemd checks that the command exists and the user is known: point them at this machine
    text = unit.read_text()
    text = text.replace("/opt/minitoolai/venv/bin/minitoolai", shutil.which("minitoolai"))
    text = re.sub(r"^(User|Group)=minitoolai$", r"\1=root", text, flags=re.M)
    copy = tmp_path / unit.name
    copy.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_worker_units_outlast_the_drain_time():
    drain = ImagesSettings().stop_drain_seconds
    worker = (DEPLOY / "systemd" / "minitoolai-worker.service").read_text()
    assert int(re.search(r"^TimeoutStopSec=(\d+)$", worker, re.M).group(1)) > drain
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    grace = compose["services"]["worker"]["stop_grace_period"]
    assert int(grace.rstrip("s")) > drain


def test_compose_topology():
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    ours = {name: s for name, s in services.items() if s.get("image", "").startswith("minitoolai")}
    assert set(ours) == {"migrate", "api1", "api2", "worker"}
    # one database (which holds the signing secret) and one Redis for every process
    for name in ("DATABASE_URL", "REDIS_URL"):
        values = {s["environment"]["MINITOOLAI_" + name] for s in ours.values()}
        assert len(values) == 1, (name, values)
    # migrations run once, before any server or worker starts
    assert ours["migrate"]["command"] == ["db", "upgrade"]
    for name in ("api1", "api2", "worker"):
        assert ours[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"
    # the API servers leave image jobs to the worker, and all share where images are stored
    for name in ("api1", "api2"):
        assert ours[name]["environment"]["MINITOOLAI_IMAGES__EMBEDDED_WORKERS"] == "0"
        assert ours[name]["command"] == ["serve"]
    assert ours["worker"]["command"] == ["worker"]
    mounts = {name: {v.split(":")[1] for v in s["volumes"]} for name, s in ours.items()}
    assert all("/var/lib/minitoolai/images" in m for m in mounts.values())
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"


def test_dockerfile_runs_the_cli_unprivileged():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER minitoolai$", text, re.M)
    assert 'ENTRYPOINT ["minitoolai"]' in text and 'CMD ["serve"]' in text
    # the runtime stage installs only from the wheels built in the build stage
    assert "--no-index --find-links /wheels" in text


COMPOSE_V1 = shutil.which("docker-compose")
NO_COMPOSE = ("needs docker-compose (Debian: apt-get install -y docker-compose): it validates"
              " the file against the Compose Specification's schema without a Docker engine")


def _compose_config(path: Path) -> subprocess.CompletedProcess:
    # a clean environment: the file's ${...} defaults, not this machine's variables, decide
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run([COMPOSE_V1, "-f", str(path), "config", "-q"], capture_output=True,
                          text=True, timeout=60, env=env, check=False)


@pytest.mark.skipif(COMPOSE_V1 is None, reason=NO_COMPOSE)
def test_compose_file_is_valid_for_compose():
    done = _compose_config(DEPLOY / "compose.yaml")
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.skipif(COMPOSE_V1 is None, reason=NO_COMPOSE)
def test_compose_validation_catches_a_mistake(tmp_path):
    """The check above is a real one: the same file with one wrong condition is refused."""
    text = (DEPLOY / "compose.yaml").read_text()
    assert "service_completed_successfully" in text
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace("service_completed_successfully", "service_finished"))
    done = _compose_config(broken)
    assert done.returncode != 0 and "service_finished" in done.stderr, done.stderr
