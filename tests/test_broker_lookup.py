"""Re-identification under audit: POST /broker/lookup and ``deid-gateway broker lookup``,
the mapping export; only the honest broker, only with a reason, every look-up audited."""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from pathlib import Path

import pydicom
import pytest
from flask import Flask

from gateway.cli.main import main
from gateway.persistence.tokens import Role
from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import gw, make_app, multipart, token

PATIENT = Patient()
REASON = "adverse finding in study 7, ticket 1234"


@pytest.fixture()
def delivered(tmp_path: Path) -> tuple[Flask, list[pydicom.Dataset], list[pydicom.Dataset]]:
    app = make_app(tmp_path / "data")
    sent = [phi_instance("CT_small.dcm", PATIENT, "lookup-study", "CT", 1)]
    body, content_type = multipart(sent)
    response = app.test_client().post(
        "/dicomweb/studies", data=body,
        headers={**token(app, Role.SENDER), "Content-Type": content_type},
    )
    assert response.status_code == 200
    gw(app).jobs.drain(60)
    out = [pydicom.dcmread(p) for p in (tmp_path / "data" / "store" / "default").rglob("*.dcm")]
    return app, sent, out


def _lookups(app: Flask) -> list[dict[str, object]]:
    rows = gw(app).review.audit_events(1000)
    return [r for r in rows if r["action"] == "broker:lookup"]


def test_honest_broker_looks_up_with_a_reason(delivered) -> None:  # type: ignore[no-untyped-def]
    app, sent, out = delivered
    client = app.test_client()
    broker = token(app, Role.HONEST_BROKER)
    answer = client.post("/broker/lookup", json={"value": out[0].SOPInstanceUID, "reason": REASON},
                         headers=broker)
    assert answer.status_code == 200, answer.data
    assert answer.get_json() == {"kind": "uid", "original": sent[0].SOPInstanceUID,
                                 "destination": "default"}
    patient = client.post("/broker/lookup", json={"value": out[0].PatientID, "reason": REASON},
                          headers=broker).get_json()
    assert patient["kind"] == "patient" and patient["original"] == PATIENT.patient_id
    miss = client.post("/broker/lookup", json={"value": "2.25.1234", "reason": REASON},
                       headers=broker)
    assert miss.status_code == 404 and miss.get_json()["error"] == "unknown-pseudonym"
    rows = _lookups(app)
    assert len(rows) == 3
    assert [r["counts"] for r in rows] == [{"hits": 0}, {"hits": 1}, {"hits": 1}]
    assert {r["identifier_kind"] for r in rows if r["counts"] == {"hits": 1}} == {"uid", "patient"}
    assert all(r["note"] == REASON and r["role"] == "honest-broker" and r["actor"] for r in rows)
    audit_text = json.dumps(gw(app).review.audit_events(1000))
    for secret in (sent[0].SOPInstanceUID, PATIENT.patient_id, out[0].SOPInstanceUID, "2.25.1234"):
        assert secret not in audit_text  # neither the original nor the value asked about


@pytest.mark.parametrize("role", [Role.SENDER, Role.PRIVACY_OFFICER, Role.ADMIN])
def test_every_other_role_is_refused(delivered, role: Role) -> None:  # type: ignore[no-untyped-def]
    app, _sent, out = delivered
    response = app.test_client().post(
        "/broker/lookup", json={"value": out[0].SOPInstanceUID, "reason": REASON},
        headers=token(app, role))
    assert response.status_code == 403
    export = app.test_client().post("/broker/export", json={"reason": REASON},
                                    headers=token(app, role))
    assert export.status_code == 403
    assert app.test_client().post("/broker/lookup", json={}).status_code == 401
    assert _lookups(app) == []


@pytest.mark.parametrize("body", [{"value": "x"}, {"value": "x", "reason": "  "}, {"value": "x", "reason": 7}])
def test_a_lookup_without_a_reason_is_refused(delivered, body) -> None:  # type: ignore[no-untyped-def]
    app, _sent, out = delivered
    body = {**body, "value": out[0].SOPInstanceUID}
    response = app.test_client().post("/broker/lookup", json=body,
                                      headers=token(app, Role.HONEST_BROKER))
    assert response.status_code == 400
    assert response.get_json()["error"] == "reason-required"
    assert _lookups(app) == []


def test_mapping_export_for_an_audit(delivered) -> None:  # type: ignore[no-untyped-def]
    app, sent, out = delivered
    response = app.test_client().post("/broker/export", json={"reason": REASON},
                                      headers=token(app, Role.HONEST_BROKER))
    assert response.status_code == 200 and response.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert sorted(archive.namelist()) == ["patid_mapping.csv", "uid_mapping.csv"]
    uids = archive.read("uid_mapping.csv").decode().splitlines()
    assert uids[0] == "id_old,id_new"
    assert f"{sent[0].SOPInstanceUID},{out[0].SOPInstanceUID}" in uids
    assert f"{sent[0].StudyInstanceUID},{out[0].StudyInstanceUID}" in uids
    patids = archive.read("patid_mapping.csv").decode().splitlines()
    assert patids == ["id_old,id_new", f"{PATIENT.patient_id},{out[0].PatientID}"]
    (row,) = [r for r in gw(app).review.audit_events(100) if r["action"] == "broker:export"]
    assert row["note"] == REASON and row["counts"]["patid_mapping"] == 1


def test_cli_lookup_prints_the_original_last(delivered, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _app, sent, out = delivered
    url = f"sqlite:///{tmp_path / 'data' / 'gateway.db'}"
    capsys.readouterr()
    code = main(["broker", "lookup", "--reason", REASON, "--database", url, out[0].SeriesInstanceUID])
    printed = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and printed[-1] == sent[0].SeriesInstanceUID
    assert main(["broker", "lookup", "--reason", REASON, "--database", url, "2.25.99"]) == 1
    with pytest.raises(SystemExit):  # argparse: --reason is required
        main(["broker", "lookup", "--database", url, out[0].SeriesInstanceUID])
    assert main(["broker", "lookup", "--reason", "", "--database", url, "2.25.99"]) == 2
    connection = sqlite3.connect(tmp_path / "data" / "gateway.db")
    rows = connection.execute(
        "select actor, role, note, identifier_kind from audit where action = 'broker:lookup'"
    ).fetchall()
    connection.close()
    assert len(rows) == 2 and all(r[0].startswith("cli:") and r[2] == REASON for r in rows)
    export = tmp_path / "audit-export"
    assert main(["broker", "export", "--reason", REASON, "--database", url, "--output", str(export)]) == 0
    assert (export / "uid_mapping.csv").stat().st_mode & 0o777 == 0o600


def test_cli_lookup_without_the_broker_key_opens_nothing(delivered, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    _app, _sent, out = delivered
    monkeypatch.setenv("DEID_GATEWAY_KEY_DIR", str(tmp_path / "elsewhere"))
    url = f"sqlite:///{tmp_path / 'data' / 'gateway.db'}"
    assert main(["broker", "lookup", "--reason", REASON, "--database", url, out[0].PatientID]) == 2
    assert "broker key" in capsys.readouterr().err


def test_broker_key_rotation_reseals_every_row(delivered, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    _app, sent, out = delivered
    url = f"sqlite:///{tmp_path / 'data' / 'gateway.db'}"
    new_key = tmp_path / "new-broker.key"
    new_key.write_text("hex:" + "ab" * 32)
    assert main(["broker", "rekey", "--reason", "yearly rotation", "--database", url,
                 "--new-key-file", str(new_key)]) == 0
    assert "resealed" in capsys.readouterr().out
    # the old key opens nothing any more; the new key opens everything
    assert main(["broker", "lookup", "--reason", REASON, "--database", url, out[0].PatientID]) == 2
    capsys.readouterr()
    code = main(["broker", "lookup", "--reason", REASON, "--database", url,
                 "--broker-key-file", str(new_key), out[0].SOPInstanceUID])
    assert code == 0 and capsys.readouterr().out.strip().splitlines()[-1] == sent[0].SOPInstanceUID
    # an interrupted rotation resumes: running it again with the new key as current is refused
    assert main(["broker", "rekey", "--reason", "again", "--database", url,
                 "--broker-key-file", str(new_key), "--new-key-file", str(new_key)]) == 2
