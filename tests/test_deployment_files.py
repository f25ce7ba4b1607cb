"""The deployment files say what the README says: docker-compose.yml runs intake, two
workers, PostgreSQL and RabbitMQ from the Dockerfile, on one shared data volume, and its
gateway configuration is a valid service configuration with a broker."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.config import ServiceConfig

ROOT = Path(__file__).resolve().parent.parent


def test_compose_runs_intake_two_workers_postgres_and_rabbitmq() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"intake", "worker", "postgres", "rabbitmq"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["intake"]["command"][0] == "serve" and services["worker"]["command"][0] == "worker"
    for name in ("intake", "worker"):
        assert "deid-data:/var/lib/deid-gateway" in services[name]["volumes"]  # one shared volume
        assert services[name]["build"] == "."
    config = ServiceConfig.model_validate(yaml.safe_load(compose["configs"]["gateway-config"]["content"]))
    assert config.queue is not None and config.queue.broker_url.startswith("amqp://")
    assert config.database_url and config.database_url.startswith("postgresql")
    assert str(config.data_dir) == "/var/lib/deid-gateway"
    assert config.key_file is not None and str(config.key_file).startswith("/run/secrets/")
    assert config.workers == 0  # serve only receives; the workers process


def test_the_image_can_write_its_data_volume() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "chown deid /var/lib/deid-gateway" in dockerfile
    assert dockerfile.index("chown deid") < dockerfile.index("USER deid")
