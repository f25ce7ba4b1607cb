"""Who may read (issue 13): a sender sees only its own jobs; the data folder and the database
(token hashes, keyed identity hashes) are owner-only when the gateway creates them."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from gateway.persistence.tokens import Role
from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import make_app, multipart, token
from tests.test_service_crash import cli, service_env, write_config


def test_a_job_is_visible_to_its_sender_officers_and_admins_only(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data")
    client = app.test_client()
    alice, bob = token(app, Role.SENDER), token(app, Role.SENDER)
    body, content_type = multipart([phi_instance("CT_small.dcm", Patient(), "acl", "CT", 1)])
    sent = client.post("/dicomweb/studies", data=body,
                       headers={**alice, "Content-Type": content_type})
    assert sent.status_code == 200
    job = sent.headers["X-Job-Id"]
    assert client.get(f"/jobs/{job}", headers=alice).status_code == 200
    other = client.get(f"/jobs/{job}", headers=bob)
    assert other.status_code == 404 and other.get_json()["error"] == "unknown-job"
    for role in (Role.PRIVACY_OFFICER, Role.ADMIN):
        assert client.get(f"/jobs/{job}", headers=token(app, role)).status_code == 200
    assert client.get(f"/jobs/{job}", headers=token(app, Role.HONEST_BROKER)).status_code == 403


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_service_creates_the_data_folder_and_database_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_app(data)
    assert mode(data) == 0o700
    assert mode(data / "gateway.db") == 0o600
    for name in ("gateway.db-wal", "gateway.db-shm", "gateway.db.init-lock"):
        if (data / name).exists():
            assert mode(data / name) & 0o077 == 0, name


def test_token_create_makes_them_owner_only_too(tmp_path: Path) -> None:
    env = service_env(tmp_path / "home")
    config = write_config(tmp_path / "gateway.yaml", tmp_path / "data", workers=0)
    subprocess.run([*cli(), "token", "create", "--role", "sender", "--config", str(config)],
                   check=True, capture_output=True, env=env, timeout=60)
    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / "gateway.db") == 0o600


def test_an_existing_database_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "gateway.db").touch(mode=0o644)
    (data / "gateway.db").chmod(0o644)
    make_app(data)
    assert mode(data / "gateway.db") == 0o600


def test_a_revoked_token_is_refused_everywhere_and_the_revocation_is_audited(tmp_path: Path) -> None:
    env = service_env(tmp_path / "home")
    config = write_config(tmp_path / "gateway.yaml", tmp_path / "data", workers=0)
    run = lambda *a: subprocess.run([*cli(), "token", *a, "--config", str(config)],
                                    capture_output=True, text=True, env=env, timeout=60, check=False)
    secret = run("create", "--role", "privacy-officer", "--label", "j.doe").stdout.strip().splitlines()[-1]
    listing = run("list").stdout
    assert "j.doe" in listing and "active" in listing and secret not in listing
    token_id = listing.splitlines()[1].split()[0]
    from gateway.config import load_config
    from gateway.persistence.db import Database
    from gateway.persistence.tokens import authenticate

    db = Database(load_config(config).db_url)
    assert authenticate(db, secret) is not None
    done = run("revoke", token_id)
    assert done.returncode == 0 and token_id in done.stdout
    assert authenticate(db, secret) is None
    assert "revoked" in run("list").stdout
    missing = run("revoke", "nosuchid")
    assert missing.returncode == 2 and "no token with id" in missing.stderr
    from gateway.persistence.models import AuditEvent

    with db.session() as session:
        assert session.query(AuditEvent).filter_by(action="token:revoke").count() == 1
