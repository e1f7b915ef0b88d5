"""The Docker image and compose file, read (no Docker engine here): what they declare fits the app."""

import fnmatch
import json
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_serves_the_image_on_loopback_with_its_data_and_health_check():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    loupe = compose["services"]["loupe"]
    assert loupe["build"] == "." and (ROOT / "Dockerfile").is_file()
    assert loupe["ports"] == ["127.0.0.1:8000:8000"]  # this machine only, as `make run`
    mounts = {volume.split(":")[0]: volume.split(":")[1:] for volume in loupe["volumes"]}
    assert mounts == {"loupe-data": ["/data"], "hf-cache": ["/hf-cache"], "./models-local": ["/models-local", "ro"]}
    assert {"loupe-data", "hf-cache"} <= set(compose["volumes"])  # named volumes; the model folder is a bind mount
    assert loupe["environment"]["LOUPE_DATA_DIR"] == "/data" and loupe["environment"]["HF_HOME"] == "/hf-cache"
    check = loupe["healthcheck"]
    assert check["test"][0] == "CMD" and "http://127.0.0.1:8000/api/health" in " ".join(check["test"])
    for key in ("interval", "timeout", "start_period"):
        assert str(check[key]).endswith("s")


def test_compose_serves_the_mounted_model_folder_read_only():
    """`LOUPE_MODEL_DIRS` names the folder the bind mount puts there, read-only; the host side exists
    in the repository (else Docker would make it, root-owned) and stays out of the image."""
    loupe = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["loupe"]
    host, target, mode = next(v.split(":") for v in loupe["volumes"] if v.startswith("./"))
    assert loupe["environment"]["LOUPE_MODEL_DIRS"] == target and mode == "ro"
    assert (ROOT / host).is_dir() and host.removeprefix("./") in (ROOT / ".dockerignore").read_text().split()
    from loupe.config import Settings

    assert Settings(model_dirs=loupe["environment"]["LOUPE_MODEL_DIRS"]).model_dirs == [Path(target)]


def test_dockerfile_matches_compose():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "EXPOSE 8000" in dockerfile and "LOUPE_PORT=8000" in dockerfile and "LOUPE_DATA_DIR=/data" in dockerfile
    assert 'VOLUME ["/data", "/hf-cache"]' in dockerfile
    assert 'CMD ["python", "-m", "loupe"]' in dockerfile and "/api/health" in dockerfile


def _pip_installs(lines: list[str]) -> list[list[str]]:
    """The arguments of every `pip install` in these shell lines (Makefile recipes, Dockerfile RUNs)."""
    found = []
    for line in lines:
        if "pip" not in line or "install" not in line:
            continue
        words = shlex.split(line.replace("$(PY)", "python").removeprefix("RUN ").rstrip("\\ "))
        if "pip" in words and "install" in words:
            found.append([word for word in words[words.index("install") + 1:] if word != "-q"])
    return found


def test_make_and_the_image_install_the_same_cpu_torch():
    """One file holds the torch pin, pyproject's, and both installs read it; the image adds the CPU
    index (a machine set up with the CPU wheel, as this one and CI, finds it through its own pip
    config: the default index's torch is a CUDA build of several GB)."""
    requirements = [line.split() for line in (ROOT / "requirements-torch.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert requirements == [["torch==2.13.0"]]
    pinned = [dep for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"] if dep.startswith("torch")]
    assert pinned == ["torch==2.13.0"]
    docker = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("RUN ")]
    make = [line.strip() for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("\t")]
    docker_torch = [args for args in _pip_installs(docker) if any("torch" in arg for arg in args)]
    assert docker_torch == [["--index-url", "$TORCH_INDEX_URL", "-r", "requirements-torch.txt"]]
    assert 'ARG TORCH_INDEX_URL=' in (ROOT / "Dockerfile").read_text() and "/whl/cpu" in (ROOT / "Dockerfile").read_text()
    assert [args for args in _pip_installs(make) if any("torch" in arg for arg in args)] == [["-r", "requirements-torch.txt"]]
    assert "COPY requirements-torch.txt" in (ROOT / "Dockerfile").read_text()
    assert "requirements-torch.txt" in next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("$(STAMP):"))


def test_a_non_editable_install_carries_every_file_the_package_serves():
    """The image runs `pip install .`: any file under backend/loupe that is no module must be package data."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["loupe"]
    package = ROOT / "backend" / "loupe"
    served = [p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert served, "the docs assets at least"
    assert all(any(fnmatch.fnmatch(path, pattern) for pattern in patterns) for path in served), served


def _compose() -> dict:
    """The compose file as Docker reads it: YAML anchors and merge keys resolved."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_is_a_valid_compose_specification():
    """compose_spec (Rust, strict: an unknown or misplaced key is an error) parses what Docker would."""
    import compose_spec  # a dev dependency: the compose file is checked in every run

    parsed = compose_spec.PyCompose.from_json(json.dumps(_compose()))
    assert parsed.service_names() == list(_compose()["services"])


def test_plain_up_is_unchanged_by_the_scale_profile():
    """`docker compose up` starts only the embedded server: every other service is in the scale profile."""
    services = _compose()["services"]
    assert [name for name, service in services.items() if "profiles" not in service] == ["loupe"]
    assert all(service["profiles"] == ["scale"] for name, service in services.items() if name != "loupe")


def test_scale_profile_runs_a_server_two_workers_redis_and_postgres():
    services = {name: s for name, s in _compose()["services"].items() if s.get("profiles") == ["scale"]}
    assert set(services) == {"web", "worker-0", "worker-1", "redis", "postgres"}
    queue, database = "redis://redis:6379/0", "postgresql+psycopg://loupe:loupe@postgres:5432/loupe"
    for name in ("web", "worker-0", "worker-1"):
        environment = services[name]["environment"]
        assert environment["LOUPE_QUEUE_URL"] == queue and environment["LOUPE_DATABASE_URL"] == database, name
    web = services["web"]
    assert web["ports"] == ["127.0.0.1:8001:8000"]  # beside the default service's 8000, on loopback as it
    assert web["healthcheck"] == _compose()["services"]["loupe"]["healthcheck"]
    gpus = []
    for name in ("worker-0", "worker-1"):
        worker = services[name]
        assert worker["command"] == ["loupe", "worker"] and worker["environment"]["LOUPE_DEVICE"].startswith("cuda")
        (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        gpus += device["device_ids"]
        assert worker["build"]["args"]["TORCH_INDEX_URL"] == "https://pypi.org/simple"  # the CUDA torch wheel
    assert sorted(gpus) == ["0", "1"]  # one GPU each
    postgres, redis = services["postgres"], services["redis"]
    assert postgres["image"].startswith("postgres:") and redis["image"].startswith("redis:")
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert postgres["healthcheck"]["test"][0] == "CMD-SHELL" and "pg_isready" in postgres["healthcheck"]["test"][1]
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"] and "postgres-data" in _compose()["volumes"]
    env = postgres["environment"]
    assert database == f"postgresql+psycopg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}"


def test_every_scale_service_is_healthy_or_waits_for_healthy_ones():
    services = _compose()["services"]
    for name, service in services.items():
        if service.get("profiles") != ["scale"]:
            continue
        depends = service.get("depends_on", {})
        assert "healthcheck" in service or depends, name
        assert all(condition == {"condition": "service_healthy"} for condition in depends.values()), name
        assert all("healthcheck" in services[dependency] for dependency in depends), name
    assert {"redis", "postgres"} <= set(services["web"]["depends_on"])
    assert all({"redis", "postgres", "web"} <= set(services[w]["depends_on"]) for w in ("worker-0", "worker-1"))


def test_the_image_installs_loupe_with_its_postgres_and_queue_extras():
    docker = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("RUN ")]
    assert [args for args in _pip_installs(docker) if not any("torch" in arg for arg in args)] == [[".[postgres,queue]"]]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("psycopg") for dep in extras["postgres"]) and any(dep.startswith("rq") for dep in extras["queue"])
