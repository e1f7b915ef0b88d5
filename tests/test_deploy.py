"""The Docker image and compose file, read (no Docker engine here): what they declare fits the app."""

import fnmatch
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_serves_the_image_on_loopback_with_its_data_and_health_check():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    loupe = compose["services"]["loupe"]
    assert loupe["build"] == "." and (ROOT / "Dockerfile").is_file()
    assert loupe["ports"] == ["127.0.0.1:8000:8000"]  # this machine only, as `make run`
    mounts = dict(volume.split(":") for volume in loupe["volumes"])
    assert mounts == {"loupe-data": "/data", "hf-cache": "/hf-cache"} and set(compose["volumes"]) == set(mounts)
    assert loupe["environment"]["LOUPE_DATA_DIR"] == "/data" and loupe["environment"]["HF_HOME"] == "/hf-cache"
    check = loupe["healthcheck"]
    assert check["test"][0] == "CMD" and "http://127.0.0.1:8000/api/health" in " ".join(check["test"])
    for key in ("interval", "timeout", "start_period"):
        assert str(check[key]).endswith("s")


def test_dockerfile_matches_compose_and_pins_torch():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "EXPOSE 8000" in dockerfile and "LOUPE_PORT=8000" in dockerfile and "LOUPE_DATA_DIR=/data" in dockerfile
    assert "torch==2.13.0" in dockerfile and 'VOLUME ["/data", "/hf-cache"]' in dockerfile
    assert 'CMD ["python", "-m", "loupe"]' in dockerfile and "/api/health" in dockerfile


def test_a_non_editable_install_carries_every_file_the_package_serves():
    """The image runs `pip install .`: any file under backend/loupe that is no module must be package data."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["loupe"]
    package = ROOT / "backend" / "loupe"
    served = [p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert served, "the docs assets at least"
    assert all(any(fnmatch.fnmatch(path, pattern) for pattern in patterns) for path in served), served
