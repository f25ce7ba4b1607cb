"""Identity index: the same person gets the same pseudonym and date shift whatever arrives, in
any order, in any process — and the index itself holds no plain identifier."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import sqlite3
from pathlib import Path
from typing import Any

import pydicom
import pytest

from gateway.cli.main import main
from gateway.persistence.models import Kind
from gateway.persistence.tokens import Role
from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import gw, make_app, multipart, token

MRN_SYSTEM = "http://hospital.smarthealthit.org"
PATIENT = Patient(family="QUINTERO", given="ROSALIND", patient_id="MRN8830021", issuer="")
LOGICAL_ID = "pat-8830021-quintero"
OBS_DATE = "2024-09-17T09:30:00Z"


def patient_resource(p: Patient = PATIENT, logical_id: str = LOGICAL_ID) -> dict[str, Any]:
    return {
        "resourceType": "Patient", "id": logical_id,
        "identifier": [{"system": MRN_SYSTEM, "value": p.patient_id}],
        "name": [{"family": p.family.title(), "given": [p.given.title()]}],
        "birthDate": f"{p.birth_date[:4]}-{p.birth_date[4:6]}-{p.birth_date[6:]}",
    }


def observation(logical_id: str = LOGICAL_ID, obs_id: str = "obs-1") -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": obs_id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": f"Patient/{logical_id}"},
        "effectiveDateTime": OBS_DATE,
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }


def report(logical_id: str = LOGICAL_ID) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport", "id": "dr-1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2", "display": "Chest CT"}]},
        "subject": {"reference": f"Patient/{logical_id}"},
        "effectiveDateTime": OBS_DATE,
        "conclusion": "No acute findings.",
    }


def post(app: Any, path: str, resource: dict[str, Any]) -> str:
    response = app.test_client().post(path, data=json.dumps(resource), headers={
        **token(app, Role.SENDER), "Content-Type": "application/fhir+json"})
    assert response.status_code == 202, response.get_json()
    return str(response.headers["X-Job-Id"])


def job(app: Any, job_id: str) -> dict[str, Any]:
    return app.test_client().get(f"/jobs/{job_id}", headers=token(app, Role.PRIVACY_OFFICER)).get_json()


def stored_fhir(root: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for part in (root / "fhir").rglob("*.ndjson"):
        for line in part.read_text().splitlines():
            resource = json.loads(line)
            out.setdefault(resource["resourceType"], []).append(resource)
    return out


def shift_days(before: str, after: str) -> int:
    return (dt.date.fromisoformat(after[:10]) - dt.date.fromisoformat(before[:10])).days


def test_resources_before_their_patient_wait_then_link_with_dicom(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data")
    jobs = gw(app).jobs
    obs_job = post(app, "/fhir/Observation", observation())
    jobs.drain(30)
    assert job(app, obs_job)["counts"] == {"pending": 1}  # neither guessed nor forwarded
    dr_job = post(app, "/fhir/DiagnosticReport", report())
    jobs.drain(30)
    assert job(app, dr_job)["counts"] == {"pending": 1}
    assert not (tmp_path / "data" / "store" / "default" / "fhir").exists()

    pat_job = post(app, "/fhir/Patient", patient_resource())
    jobs.drain(60)
    for job_id in (obs_job, dr_job, pat_job):
        assert job(app, job_id)["counts"] == {"forwarded": 1}

    ds = phi_instance("CT_small.dcm", PATIENT, "idx-study", "CT", 1)
    del ds.IssuerOfPatientID
    ds.StudyDate = "20240917"
    body, content_type = multipart([ds])
    response = app.test_client().post("/dicomweb/studies", data=body, headers={
        **token(app, Role.SENDER), "Content-Type": content_type})
    assert response.status_code == 200
    jobs.drain(60)

    store = tmp_path / "data" / "store" / "default"
    (dicom,) = [pydicom.dcmread(p) for p in store.rglob("*.dcm")]
    fhir = stored_fhir(store)
    (patient,) = fhir["Patient"]
    (obs,) = fhir["Observation"]
    (dr,) = fhir["DiagnosticReport"]
    assert any(i.get("value") == dicom.PatientID for i in patient["identifier"])
    assert obs["subject"]["reference"] == dr["subject"]["reference"] == f"Patient/{patient['id']}"
    dicom_shift = (dt.datetime.strptime(dicom.StudyDate, "%Y%m%d").date() - dt.date(2024, 9, 17)).days
    assert dicom_shift != 0
    assert shift_days(OBS_DATE, obs["effectiveDateTime"]) == dicom_shift
    assert shift_days(OBS_DATE, dr["effectiveDateTime"]) == dicom_shift
    text = json.dumps(fhir)
    assert PATIENT.patient_id not in text and LOGICAL_ID not in text and "Quintero" not in text


def test_patient_that_never_arrives_ends_in_quarantine(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data", identity={"pending_seconds": 0.5})
    job_id = post(app, "/fhir/Observation", observation("pat-never"))
    gw(app).jobs.drain(5)
    assert job(app, job_id)["counts"] == {"pending": 1}
    import time

    time.sleep(0.7)
    gw(app).jobs.drain(10)
    status = job(app, job_id)
    assert status["counts"] == {"quarantined": 1}
    assert status["quarantined"][0]["reason"] == "unresolved-patient"


def test_index_holds_no_plain_identifier(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data")
    post(app, "/fhir/Patient", patient_resource())
    post(app, "/fhir/Observation", observation())
    ds = phi_instance("CT_small.dcm", PATIENT, "idx-study", "CT", 1)
    gw(app).jobs.accept("default", Kind.DICOM, "test", [_bytes(ds)])
    gw(app).jobs.drain(60)
    dump = "\n".join(sqlite3.connect(tmp_path / "data" / "gateway.db").iterdump())
    assert "identity_links" in dump
    for plain in (PATIENT.patient_id, LOGICAL_ID, PATIENT.family, PATIENT.family.title(),
                  PATIENT.given.title(), PATIENT.birth_date, "1947-03-12", MRN_SYSTEM):
        assert plain not in dump, plain


def _bytes(ds: pydicom.Dataset) -> bytes:
    import io

    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_a_later_identifier_links_to_the_first_person_and_conflicts_are_reported(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data")
    index = gw(app).jobs.indexes["default"]
    first = index.learn_patient({"resourceType": "Patient", "id": "a",
                                 "identifier": [{"system": "urn:national", "value": "N-1"}]})
    second = index.learn_patient({"resourceType": "Patient", "id": "b",
                                  "identifier": [{"system": MRN_SYSTEM, "value": "M-1"}]})
    assert first.person_key != second.person_key
    merged = index.learn_patient({"resourceType": "Patient", "id": "c", "identifier": [
        {"system": "urn:national", "value": "N-1"}, {"system": MRN_SYSTEM, "value": "M-1"}]})
    assert merged.person_key == first.person_key  # the oldest link wins; issued pseudonyms stay
    assert merged.conflicts >= 1
    assert index.lookup(index.identifier_hash(MRN_SYSTEM, "M-1")) == second.person_key
    from sqlalchemy import func, select

    from gateway.persistence.models import IdentityConflict

    with gw(app).db.session() as session:
        assert session.scalar(select(func.count()).select_from(IdentityConflict)) >= 1


def _learn_worker(db_url: str, data_dir: str, order: list[int], queue: Any) -> None:
    os.environ["DEID_GATEWAY_KEY"] = "test-key-" + "0123456789abcdef" * 3
    app = make_app(Path(data_dir), database_url=db_url)
    index = gw(app).jobs.indexes["default"]
    keys = {}
    for n in order:
        learned = index.learn_patient({"resourceType": "Patient", "id": f"p{n}", "identifier": [
            {"system": "urn:national", "value": f"N{n}"}, {"system": "urn:other", "value": f"O{n}"}]})
        keys[n] = learned.person_key
    queue.put(keys)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_parallel_processes_never_create_two_person_keys(tmp_path: Path, backend: str) -> None:
    if backend == "sqlite":
        db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        db_url = _postgres_url(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    patients = list(range(60))
    procs = [
        ctx.Process(target=_learn_worker, args=(db_url, str(tmp_path / f"d{i}"), order, queue))
        for i, order in enumerate([patients, patients[::-1], patients[20:] + patients[:20]])
    ]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    for n in patients:
        assert len({r[n] for r in results}) == 1, n


def _postgres_url(tmp_path: Path) -> str:
    import psycopg

    name = f"deid_test_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"
    try:
        with psycopg.connect("host=127.0.0.1 port=5432 dbname=postgres user=postgres",
                             autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 not available ({type(exc).__name__})")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def test_cli_resolves_patients_whatever_the_file_order(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a-Observation.ndjson").write_text(json.dumps(observation()) + "\n")
    (inputs / "b-DiagnosticReport.ndjson").write_text(json.dumps(report()) + "\n")
    (inputs / "z-Patient.ndjson").write_text(json.dumps(patient_resource()) + "\n")
    ds = phi_instance("CT_small.dcm", PATIENT, "idx-study", "CT", 1)
    del ds.IssuerOfPatientID
    ds.save_as(inputs / "image.dcm", enforce_file_format=True)
    out = tmp_path / "out"
    assert main(["deidentify", "--quiet", "--input", str(inputs), "--output", str(out)]) == 0
    (dicom,) = [pydicom.dcmread(p) for p in out.rglob("*.dcm")]
    resources: dict[str, list[dict[str, Any]]] = {}
    for part in (out / "fhir").rglob("*.ndjson"):
        for line in part.read_text().splitlines():
            r = json.loads(line)
            resources.setdefault(r["resourceType"], []).append(r)
    (patient,) = resources["Patient"]
    assert any(i.get("value") == dicom.PatientID for i in patient["identifier"])
    (obs,) = resources["Observation"]
    assert obs["subject"]["reference"] == f"Patient/{patient['id']}"
    dicom_shift = (dt.datetime.strptime(dicom.StudyDate, "%Y%m%d").date()
                   - dt.datetime.strptime(PATIENT.study_date, "%Y%m%d").date()).days
    assert shift_days(OBS_DATE, obs["effectiveDateTime"]) == dicom_shift


def _payloads() -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(patients, observations+reports, dicom) for four people."""
    patients, clinical, images = [], [], []
    for n in range(4):
        person = Patient(family=f"FAMILY{n}X", given=f"GIVEN{n}X", patient_id=f"MRN55{n}0{n}", issuer="")
        logical = f"pat-{n}-logical"
        patients.append(json.dumps(patient_resource(person, logical)).encode())
        clinical.append(json.dumps(observation(logical, f"obs-{n}")).encode())
        dr = report(logical)
        dr["id"] = f"dr-{n}"
        clinical.append(json.dumps(dr).encode())
        ds = phi_instance("CT_small.dcm", person, f"two-proc-{n}", "CT", 1)
        del ds.IssuerOfPatientID
        images.append(_bytes(ds))
    return patients, clinical, images


def _feed(db_url: str, data_dir: str, store: str, fhir: list[bytes], dicom: list[bytes], queue: Any) -> None:
    import time

    os.environ["DEID_GATEWAY_KEY"] = "test-key-" + "0123456789abcdef" * 3
    try:
        app = make_app(Path(data_dir), database_url=db_url, retry={"lease_seconds": 10},
                       destinations={"default": {"profile": "research",
                                                 "store": {"type": "folder", "path": store}}})
        jobs = gw(app).jobs
        for payload in fhir:
            jobs.accept("default", Kind.FHIR, "test", [payload])
        for payload in dicom:
            jobs.accept("default", Kind.DICOM, "test", [payload])
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            jobs.recover()
            jobs.drain(30)
            if jobs.backlog() == 0:  # pending ones included: the other process may release them
                break
            time.sleep(0.2)
        queue.put(jobs.backlog())
    except Exception as exc:  # noqa: BLE001 - report, don't hang the parent
        queue.put(f"{type(exc).__name__}: {exc}")


def _tree(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "manifests" not in p.parts}


def test_two_processes_feeding_halves_equal_one_process_feeding_all(tmp_path: Path) -> None:
    patients, clinical, images = _payloads()
    ctx = multiprocessing.get_context("spawn")

    single_q = ctx.Queue()
    single = ctx.Process(target=_feed, args=(f"sqlite:///{tmp_path / 'one.db'}", str(tmp_path / "one"),
                                            str(tmp_path / "store-one"), clinical + patients, images, single_q))
    single.start()
    assert single_q.get(timeout=240) == 0
    single.join(60)

    shared_q = ctx.Queue()
    db = f"sqlite:///{tmp_path / 'two.db'}"
    halves = [
        ctx.Process(target=_feed, args=(db, str(tmp_path / "a"), str(tmp_path / "store-two"),
                                        clinical, images[:2], shared_q)),
        ctx.Process(target=_feed, args=(db, str(tmp_path / "b"), str(tmp_path / "store-two"),
                                        patients, images[2:], shared_q)),
    ]
    for proc in halves:
        proc.start()
    assert [shared_q.get(timeout=240) for _ in halves] == [0, 0]
    for proc in halves:
        proc.join(60)
    one, two = _tree(tmp_path / "store-one"), _tree(tmp_path / "store-two")
    assert len([k for k in one if k.endswith(".dcm")]) == 4
    assert len([k for k in one if k.endswith(".ndjson")]) == 12
    assert sorted(set(one) ^ set(two)) == []
    assert [k for k in one if one[k] != two[k]] == []


UNDECLARED_SYSTEM = "urn:oid:2.16.840.1.113883.3.999.1"


def _mr_patient() -> dict[str, Any]:
    resource = patient_resource()
    resource["identifier"] = [{
        "system": UNDECLARED_SYSTEM, "value": PATIENT.patient_id,
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
    }]  # fmt: skip
    return resource


def test_undeclared_registers_are_reported_by_name_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DICOM issuer and a FHIR MR system that no namespace declares: named in the CLI
    summary, in /metrics and in the audit; the patient's values never."""
    patient = Patient(family="QUINTERO", given="ROSALIND", patient_id="MRN8830021", issuer="HOSP-NORTH")
    inputs = tmp_path / "in"
    inputs.mkdir()
    phi_instance("CT_small.dcm", patient, "idx-undeclared", "CT", 1).save_as(inputs / "image.dcm", enforce_file_format=True)
    (inputs / "patient.json").write_text(json.dumps(_mr_patient()))
    assert main(["deidentify", "--quiet", "--input", str(inputs), "--output", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "undeclared   dicom-issuer:HOSP-NORTH (1 inputs)" in err
    assert f"undeclared   fhir-system:{UNDECLARED_SYSTEM} (1 inputs)" in err
    assert PATIENT.patient_id not in err

    app = make_app(tmp_path / "data")
    body, content_type = multipart([phi_instance("CT_small.dcm", patient, "idx-undeclared", "CT", 1)])
    stow = app.test_client().post("/dicomweb/studies", data=body, headers={
        **token(app, Role.SENDER), "Content-Type": content_type})
    assert stow.status_code == 200
    post(app, "/fhir/Patient", _mr_patient())
    gw(app).jobs.drain(60)
    metrics = app.test_client().get("/metrics", headers=token(app, Role.ADMIN)).get_data(as_text=True)
    assert 'register="dicom-issuer:HOSP-NORTH"' in metrics
    assert f'register="fhir-system:{UNDECLARED_SYSTEM}"' in metrics
    audit = app.test_client().get("/audit", headers=token(app, Role.PRIVACY_OFFICER)).get_json()
    names = {n for row in audit if row["action"] == "identity:undeclared-register" for n in row["counts"]}
    assert names == {"dicom-issuer:HOSP-NORTH", f"fhir-system:{UNDECLARED_SYSTEM}"}
    assert PATIENT.patient_id not in json.dumps(audit) + metrics


def test_service_counts_duplicates_and_quarantines_conflicting_instances(tmp_path: Path) -> None:
    """The same instance twice: one file, the second item a duplicate; another instance under
    the same SOPInstanceUID: quarantined as conflicting-instance, the first kept. /jobs says so."""
    app = make_app(tmp_path / "data")
    first = phi_instance("CT_small.dcm", PATIENT, "idx-dup", "CT", 1)
    other = phi_instance("CT_small.dcm", PATIENT, "idx-dup", "CT", 1)
    other.SliceLocation = "99.0"
    jobs = []
    for ds in (first, first, other):
        body, content_type = multipart([ds])
        answer = app.test_client().post("/dicomweb/studies", data=body, headers={
            **token(app, Role.SENDER), "Content-Type": content_type})
        assert answer.status_code == 200
        jobs.append(answer.headers["X-Job-Id"])
        gw(app).jobs.drain(60)  # in arrival order
    status = [app.test_client().get(f"/jobs/{j}", headers=token(app, Role.PRIVACY_OFFICER)).get_json()
              for j in jobs]
    assert [s["counts"] for s in status] == [{"forwarded": 1}, {"duplicate": 1}, {"quarantined": 1}]
    assert status[2]["quarantined"][0]["reason"] == "conflicting-instance"
    (stored,) = list((tmp_path / "data" / "store" / "default").rglob("*.dcm"))
    assert "99.0" not in str(pydicom.dcmread(stored).get("SliceLocation", ""))
