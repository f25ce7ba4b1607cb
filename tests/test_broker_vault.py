"""The broker vault: every pseudonym issued at delivery is recorded, sealed with the broker key;
a dump of the database without that key holds no original identifier."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pydicom
import pytest

from gateway.broker.keys import BrokerKey
from gateway.broker.vault import Vault
from gateway.linkage.issued import IssuedKind
from gateway.persistence.tokens import Role
from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import gw, make_app, multipart, token

PATIENT = Patient()


def _send_study(app, tmp_path: Path) -> list[pydicom.Dataset]:  # type: ignore[no-untyped-def]
    first = phi_instance("CT_small.dcm", PATIENT, "vault-study", "CT", 1)
    second = phi_instance("CT_small.dcm", PATIENT, "vault-study", "CT", 2, first)
    body, content_type = multipart([first, second])
    response = app.test_client().post(
        "/dicomweb/studies", data=body,
        headers={**token(app, Role.SENDER), "Content-Type": content_type},
    )
    assert response.status_code == 200, response.data
    gw(app).jobs.drain(60)
    return [first, second]


def _delivered(tmp_path: Path) -> list[pydicom.Dataset]:
    files = sorted((tmp_path / "data" / "store" / "default").rglob("*.dcm"))
    return [pydicom.dcmread(f) for f in files]


def test_every_issued_pseudonym_maps_back(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data")
    sent = _send_study(app, tmp_path)
    out = _delivered(tmp_path)
    assert len(out) == 2
    vault = gw(app).vault
    assert vault is not None
    by_new = {o.SOPInstanceUID: o for o in out}
    originals = {s.SOPInstanceUID for s in sent}
    for new_uid in by_new:
        (found,) = vault.find(new_uid)
        assert found.kind is IssuedKind.UID and found.original in originals
    study = vault.find(out[0].StudyInstanceUID)[0]
    assert study.original == sent[0].StudyInstanceUID
    assert study.context["StudyDate"] == PATIENT.study_date
    assert study.context["PatientPseudonym"] == out[0].PatientID
    patient = next(f for f in vault.find(out[0].PatientID) if f.kind is IssuedKind.PATIENT)
    assert patient.original == PATIENT.patient_id
    assert patient.context["PatientName"] == PATIENT.name
    assert patient.context["PatientBirthDate"] == PATIENT.birth_date
    (series,) = vault.find(out[0].SeriesInstanceUID)
    assert series.original == sent[0].SeriesInstanceUID
    if out[0].get("FrameOfReferenceUID"):
        assert vault.find(out[0].FrameOfReferenceUID)[0].original == sent[0].FrameOfReferenceUID
    accession = vault.find(out[0].AccessionNumber) if out[0].get("AccessionNumber") else []
    assert not accession or accession[0].original == PATIENT.accession


def test_database_dump_without_broker_key_reveals_nobody(tmp_path: Path) -> None:
    import json

    app = make_app(tmp_path / "data")
    sent = _send_study(app, tmp_path)
    patient = {"resourceType": "Patient", "id": "hospital-logical-id-4471",
               "identifier": [{"system": "urn:oid:1.2.3.4", "value": PATIENT.patient_id}],
               "name": [{"family": PATIENT.family, "given": [PATIENT.given]}]}
    response = app.test_client().post("/fhir/Patient", data=json.dumps(patient), headers={
        **token(app, Role.SENDER), "Content-Type": "application/fhir+json"})
    assert response.status_code == 202
    gw(app).jobs.drain(60)
    assert any(f.original == "Patient/hospital-logical-id-4471"
               for f in gw(app).vault.rows([IssuedKind.FHIR_ID]))  # type: ignore[union-attr]
    gw(app).db.engine.dispose()
    database = tmp_path / "data" / "gateway.db"
    connection = sqlite3.connect(database)
    dump = "\n".join(connection.iterdump())
    rows = connection.execute("select count(*) from vault_entries").fetchone()[0]
    connection.close()
    assert rows >= 5  # patient, study, series, 2 instances (+ frame of reference, ...)
    raw = dump + "".join(p.read_bytes().decode("latin-1") for p in database.parent.glob("gateway.db*"))
    needles = [*PATIENT.phi_strings(), *(s.SOPInstanceUID for s in sent),
               sent[0].StudyInstanceUID, sent[0].SeriesInstanceUID, "hospital-logical-id-4471"]
    for needle in needles:
        assert needle.upper() not in raw.upper(), "an original is readable without the broker key"


def test_a_vault_row_does_not_open_with_another_key(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data")
    out_pid = None
    _send_study(app, tmp_path)
    out_pid = _delivered(tmp_path)[0].PatientID
    other = Vault(gw(app).db, BrokerKey(b"another broker key of enough length!!"))
    with pytest.raises(Exception) as raised:
        other.find(out_pid)
    assert "key" in str(raised.value)


def test_a_destination_may_turn_the_vault_off(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data", destinations={"default": {"vault": False}})
    _send_study(app, tmp_path)
    assert gw(app).vault is None
    connection = sqlite3.connect(tmp_path / "data" / "gateway.db")
    assert connection.execute("select count(*) from vault_entries").fetchone()[0] == 0
    connection.close()


def test_cli_keeps_its_vault_beside_the_output(tmp_path: Path) -> None:
    from gateway.broker.cli_vault import default_vault_url, open_vault
    from gateway.cli.main import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    first = phi_instance("CT_small.dcm", PATIENT, "cli-study", "CT", 1)
    pydicom.dcmwrite(inputs / "a.dcm", first, enforce_file_format=True)
    output = tmp_path / "research"
    assert main(["deidentify", "--input", str(inputs), "--output", str(output), "--quiet"]) == 0
    assert (tmp_path / "research.vault.db").exists()
    assert not list(output.rglob("*.vault.db"))
    (delivered,) = [pydicom.dcmread(p) for p in output.rglob("*.dcm")]
    vault = open_vault(default_vault_url(output), create_key=False)
    assert vault.find(delivered.SOPInstanceUID)[0].original == first.SOPInstanceUID
    patient = [f for f in vault.find(delivered.PatientID) if f.kind is IssuedKind.PATIENT]
    assert patient[0].original == PATIENT.patient_id
