"""The PostgreSQL settings Funil is measured with are the ones docker-compose runs."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _conf_settings():
    settings = {}
    for line in (ROOT / "config/postgres/funil.conf").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, value = (part.strip() for part in line.split("=", 1))
            settings[name] = value
    return settings


def test_docker_compose_postgres_runs_with_the_measured_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["postgres"]["command"]
    assert command[0] == "postgres"
    flags = command[1:]
    assert flags[::2] == ["-c"] * (len(flags) // 2)
    from_compose = dict(flag.split("=", 1) for flag in flags[1::2])
    assert from_compose == _conf_settings()
    assert from_compose["shared_buffers"]  # not an empty file on either side
