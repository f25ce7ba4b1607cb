"""Issue 16's acceptance: a cohort export by pull from a real PACS (Orthanc, DICOMweb through
a counting proxy) and a real EHR (the FHIR test server), through the gateway's pipeline into
a research folder store: exactly the cohort's studies and resources, linked, and a second run
(or a run killed midway and started again) fetches nothing twice.

The FHIR test server (@medplum/fhir-router) has no ``Patient/$everything``: the per-type search
fallback is what these tests exercise (the report names the route taken)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
import yaml
from sqlalchemy import select

from gateway.config import load_config
from gateway.intake.pull.cohort import parse_cohort
from gateway.intake.pull.export import Exporter, ExportRequest
from gateway.intake.pull.lease import ExportBusy
from gateway.intake.pull.pacs import StudyFilter
from gateway.intake.pull.report import export_report
from gateway.intake.pull.sources import build_ehr, build_pacs
from gateway.persistence.models import ExportMove, Job
from gateway.persistence.tokens import Role
from gateway.service import Gateway, build_gateway
from tests import fhir_server_harness, orthanc_harness
from tests.cohort_fixtures import (
    CountingProxy,
    HospitalPatient,
    load_ehr,
    load_pacs,
    new_patient,
    read_store,
    series_path,
    tree_digest,
)
from tests.fhir_fixtures import MRN_SYSTEM
from tests.server_process import serve_for_session
from tests.service_helpers import gw, make_app, token

ROOT = Path(__file__).resolve().parents[1]
orthanc_server = orthanc_harness.orthanc_server
orthanc = orthanc_harness.orthanc
fhir_server_process = fhir_server_harness.fhir_server_process
fhir_server = fhir_server_harness.fhir_server


def make_hospital(pacs: Any, fhir_server: Any) -> dict[str, HospitalPatient]:
    """A has two studies, B one, C one (in the cohort by accession only), E one (outside)."""
    patients = {"A": new_patient("ABERNATHY", 2), "B": new_patient("BLACKWOOD", 1),
                "C": new_patient("CALLOWAY", 1), "E": new_patient("EVERSHOLT", 1)}  # fmt: skip
    load_pacs(pacs, list(patients.values()))
    load_ehr(fhir_server, list(patients.values()))
    return patients


@pytest.fixture()
def hospital(orthanc: Any, fhir_server: Any) -> dict[str, HospitalPatient]:
    return make_hospital(orthanc, fhir_server)


@pytest.fixture()
def proxy(orthanc: Any) -> Iterator[CountingProxy]:
    counting = CountingProxy(orthanc.base_url)
    yield counting
    counting.close()


def cohort_csv(patients: dict[str, HospitalPatient]) -> bytes:
    rows = ["mrn,accession", f"{patients['A'].mrn},", f"{patients['B'].mrn},",
            f",{patients['C'].accessions[0]}", "MRN-NOT-KNOWN-0000,"]  # fmt: skip
    return ("\n".join(rows) + "\n").encode()


def service_config(data: Path, pacs_url: str, fhir_url: str, **pacs: Any) -> dict[str, Any]:
    return {
        "data_dir": str(data),
        "destinations": {"default": {"profile": "research"}},
        "retry": {"lease_seconds": 3},
        "housekeeping_seconds": 0.5,
        "sources": {
            "pacs": {"type": "dicomweb", "url": pacs_url, "requests_per_second": 50, **pacs},
            "ehr": {"type": "fhir", "url": fhir_url, "requests_per_second": 50},
        },
    }


def export(core: Gateway, cohort: bytes) -> str:
    pacs, ehr = build_pacs(core.config), build_ehr(core.config)
    try:
        export_id = Exporter(core, pacs, ehr).run(ExportRequest("default", parse_cohort(cohort)))
    finally:
        for source in (pacs, ehr):
            if source is not None:
                source.close()
    core.jobs.drain(240)
    return export_id


def assert_linked_cohort(store: dict[str, Any], patients: dict[str, HospitalPatient]) -> None:
    """Exactly A, B and C: their 4 studies (8 instances), their Patients and resources, each
    patient one pseudonym across DICOM and FHIR; nothing of E."""
    assert len(store["studies"]) == 3, "three patients in the store"
    assert sorted(len(s) for s in store["studies"].values()) == [1, 1, 2]
    assert store["instances"] == 8
    fhir = store["fhir"]
    assert len(fhir["Patient"]) == 3 and len(fhir["Observation"]) == 3
    assert len(fhir["Condition"]) == 3 and len(fhir["ImagingStudy"]) == 3
    for patient in fhir["Patient"]:
        (pid,) = [i["value"] for i in patient["identifier"]]
        assert pid in store["studies"], "the FHIR Patient's identifier is a DICOM PatientID"
        assert patient["id"] == pid
    for imaging in fhir["ImagingStudy"]:
        pid = imaging["subject"]["reference"].removeprefix("Patient/")
        uids = [i["value"].removeprefix("urn:oid:") for i in imaging["identifier"]]
        assert set(uids) & store["studies"][pid], "ImagingStudy UID = the DICOM StudyInstanceUID"
    text = repr(store)
    for hp in patients.values():
        assert hp.mrn not in text and hp.patient.family not in text.upper()


def test_export_pulls_exactly_the_cohort_linked_and_fetches_nothing_twice(
    tmp_path: Path, hospital: dict[str, HospitalPatient], proxy: CountingProxy, fhir_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    config = load_config(**service_config(tmp_path / "data", proxy.url + "/dicom-web",
                                          fhir_server.base_url))  # fmt: skip
    core = build_gateway(config)
    cohort = cohort_csv(hospital)
    export_id = export(core, cohort)

    store = read_store(tmp_path / "data" / "store" / "default")
    assert_linked_cohort(store, hospital)
    wanted = {series_path("/dicom-web", st, se) for key in "ABC"
              for st, series in hospital[key].studies.items() for se in series}  # fmt: skip
    assert dict(proxy.retrieves()) == dict.fromkeys(wanted, 1), "each series fetched once"

    report = export_report(core.db, export_id)
    assert report is not None and report["done"] and report["status"] == "done"
    assert report["entries"] == {"total": 4, "found": 3, "not_found": 1, "not_found_rows": [4],
                                 "failed": [], "to_do": 0}  # fmt: skip
    assert report["dicom"]["studies_delivered"] == 4 and report["dicom"]["series_fetched"] == 8
    assert report["dicom"]["routes"] == ["qido-wado"]
    assert report["fhir"]["routes"] == ["per-type-search"], "no $everything on this server"
    assert report["fhir"]["patients_fetched"] == 3
    assert report["fhir"]["resources_fetched"] == 12
    assert report["quarantined_by_reason"] == {}
    assert report["rows"] == [
        {"row": 1, "status": "found", "studies": 2, "series": 4, "instances": 4, "resources": 4},
        {"row": 2, "status": "found", "studies": 1, "series": 2, "instances": 2, "resources": 4},
        {"row": 3, "status": "found", "studies": 1, "series": 2, "instances": 2, "resources": 4},
        {"row": 4, "status": "not-found", "studies": 0, "series": 0, "instances": 0,
         "resources": 0},
    ]  # fmt: skip
    assert "MRN" not in repr(report)

    # the same export again: resumed, every entry settled: not one request to the PACS
    before = sum(proxy.counts.values())
    assert export(core, cohort) == export_id
    assert sum(proxy.counts.values()) == before
    assert read_store(tmp_path / "data" / "store" / "default") == store
    assert_no_identifier_in(caplog.text, hospital)


def assert_no_identifier_in(text: str, patients: dict[str, HospitalPatient]) -> None:
    """Every log record at DEBUG, from every logger: no MRN, accession or original UID."""
    assert "PatientID=" not in text and "identifier=" not in text
    for hp in patients.values():
        for value in (hp.mrn, *hp.accessions, *hp.studies):
            assert value not in text


def _cli(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "export", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)  # fmt: skip


def _fetch_rows(db: Path) -> tuple[bytes, set[str]]:
    """The run's salt and the ref hashes recorded so far (read with sqlite3, as a
    privacy officer's tool would; an absent table is nothing recorded yet)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
            salts = connection.execute("SELECT salt FROM export_runs").fetchall()
            refs = connection.execute(
                "SELECT ref_hash FROM export_fetches WHERE kind = 'DICOM'").fetchall()
    except sqlite3.OperationalError:
        return b"", set()
    return (bytes.fromhex(salts[0][0]) if salts else b""), {r for (r,) in refs}


def test_export_killed_midway_resumes_to_the_same_store_without_fetching_twice(
    tmp_path: Path, hospital: dict[str, HospitalPatient], proxy: CountingProxy,
    orthanc: Any, fhir_server: Any,
) -> None:  # fmt: skip
    cohort = tmp_path / "cohort.csv"
    cohort.write_bytes(cohort_csv(hospital))
    # the reference: the same export run once, uninterrupted, straight from Orthanc
    clean = build_gateway(load_config(**service_config(
        tmp_path / "clean", orthanc.dicomweb_url, fhir_server.base_url)))  # fmt: skip
    export(clean, cohort.read_bytes())
    reference = tree_digest(tmp_path / "clean" / "store" / "default")

    # the same export by the CLI, slowed down so that it can be killed midway
    data = tmp_path / "data"
    settings = service_config(data, proxy.url + "/dicom-web", fhir_server.base_url,
                              requests_per_second=4, max_concurrent=1)  # fmt: skip
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    args = ["--config", str(config), "--cohort", str(cohort), "--destination", "default",
            "--wait", "240"]  # fmt: skip
    first = _cli(args)
    deadline = time.monotonic() + 120
    while len(_fetch_rows(data / "gateway.db")[1]) < 3:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the export did not get going"
        time.sleep(0.05)
    # one runner at a time: while the CLI runs it, nobody else may (it would fetch twice)
    other = build_gateway(load_config(**settings))
    with pytest.raises(ExportBusy):
        Exporter(other, None, build_ehr(other.config)).open(
            ExportRequest("default", parse_cohort(cohort.read_bytes())))
    first.kill()
    first.wait(30)
    salt, done = _fetch_rows(data / "gateway.db")
    assert 3 <= len(done) < 8, "killed midway"
    before_kill = proxy.retrieves()

    second = _cli(args)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert "resumed" in err and "not found: rows 4" in out
    for hp in hospital.values():
        assert hp.mrn not in out + err

    after = proxy.retrieves()
    again = after - before_kill
    for key in "ABC":
        for study, series in hospital[key].studies.items():
            for uid in series:
                path = series_path("/dicom-web", study, uid)
                assert after[path] >= 1
                if hmac.new(salt, uid.encode(), hashlib.sha256).hexdigest() in done:
                    assert again[path] == 0, "a series delivered before the kill was fetched again"
    outside = {series_path("/dicom-web", st, se) for st, ss in hospital["E"].studies.items() for se in ss}
    assert not outside & set(after), "nothing of a patient outside the cohort is fetched"
    assert tree_digest(data / "store" / "default") == reference
    assert_linked_cohort(read_store(data / "store" / "default"), hospital)


# -- the DIMSE route ---------------------------------------------------------------------------
PULL_AE, MOVE_AE = "DEIDPULL", "DEIDGW"


@pytest.fixture(scope="module")
def dimse_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An Orthanc of its own whose DICOM port knows the gateway: as the SCU that queries and
    retrieves (C-FIND, C-GET, C-MOVE allowed) and as the C-MOVE destination (the export's
    C-STORE listener on ``move_port``)."""
    binary, plugin = orthanc_harness._require()
    move_port = orthanc_harness.free_port()
    rights = {"AllowEcho": True, "AllowFind": True, "AllowGet": True, "AllowMove": True,
              "AllowStore": False}  # fmt: skip
    modalities = {
        "deid-pull": {"AET": PULL_AE, "Host": "127.0.0.1", "Port": move_port, **rights},
        "deid-gateway": {"AET": MOVE_AE, "Host": "127.0.0.1", "Port": move_port, **rights},
    }
    server = orthanc_harness.OrthancServer(tmp_path_factory.mktemp("orthanc-dimse"), binary,
                                           plugin, {"DicomModalities": modalities})  # fmt: skip
    server.move_port = move_port  # type: ignore[attr-defined]
    yield from serve_for_session(server)


@pytest.mark.parametrize("route", ["c-get", "c-move"])
def test_export_over_dimse_find_and_get_or_move(
    route: str, tmp_path: Path, dimse_pacs: Any, fhir_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    dimse_pacs.start()
    dimse_pacs.clear()
    patients = make_hospital(dimse_pacs, fhir_server)
    pacs = {"type": "dimse", "host": "127.0.0.1", "port": dimse_pacs.dicom_port,
            "called_ae": "ORTHANCTEST", "calling_ae": PULL_AE, "requests_per_second": 50}  # fmt: skip
    if route == "c-move":
        pacs["move_destination_ae"] = MOVE_AE
    settings = service_config(tmp_path / "data", "unused", fhir_server.base_url)
    settings["sources"]["pacs"] = pacs
    settings["dimse"] = {"host": "127.0.0.1", "port": dimse_pacs.move_port, "ae_title": MOVE_AE}
    core = build_gateway(load_config(**settings))
    export_id = export(core, cohort_csv(patients))

    assert_linked_cohort(read_store(tmp_path / "data" / "store" / "default"), patients)
    report = export_report(core.db, export_id)
    assert report is not None and report["done"]
    assert report["dicom"]["routes"] == [route]
    assert report["entries"]["not_found_rows"] == [4] and report["entries"]["failed"] == []
    assert report["dicom"]["studies_delivered"] == 4 and report["dicom"]["instances_fetched"] == 8
    assert_no_identifier_in(caplog.text, patients)


# -- the service: POST /exports, GET /exports/{id} ---------------------------------------------
def test_post_exports_runs_the_export_in_the_service_and_reports_without_phi(
    tmp_path: Path, hospital: dict[str, HospitalPatient], orthanc: Any, fhir_server: Any
) -> None:
    settings = service_config(tmp_path / "data", orthanc.dicomweb_url, fhir_server.base_url)
    app = make_app(tmp_path / "data", start_workers=True, **{k: v for k, v in settings.items()
                                                            if k != "data_dir"})  # fmt: skip
    client = app.test_client()
    officer = token(app, Role.PRIVACY_OFFICER)
    csv = {"Content-Type": "text/csv"}
    try:
        refused = client.post("/exports", data=cohort_csv(hospital),
                              headers={**token(app, Role.SENDER), **csv})  # fmt: skip
        assert refused.status_code == 403
        bad = client.post("/exports", data=b"name\nx\n", headers={**officer, **csv})
        assert bad.status_code == 400 and bad.get_json()["error"] == "cohort-invalid"
        assert client.get("/exports/nope", headers=officer).status_code == 404

        started = client.post("/exports?modalities=CT", data=cohort_csv(hospital),
                              headers={**officer, **csv})  # fmt: skip
        assert started.status_code == 202, started.get_json()
        location = started.headers["Location"]
        deadline = time.monotonic() + 240
        while True:
            report = client.get(location, headers=officer).get_json()
            if (report["done"] and not report["running"]) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        gw(app).stop_workers()
    assert report["done"] and report["status"] == "done", report
    assert report["settings"]["modalities"] == "CT"
    assert report["entries"]["found"] == 3 and report["entries"]["not_found_rows"] == [4]
    assert report["dicom"]["series_fetched"] == 4, "CT series only"
    assert report["dicom"]["studies_delivered"] == 4
    assert report["fhir"]["resources_delivered"] == 12
    store = read_store(tmp_path / "data" / "store" / "default")
    assert store["instances"] == 4 and sum(map(len, store["studies"].values())) == 4
    text = repr(report)
    for hp in hospital.values():
        assert hp.mrn not in text and hp.accessions[0] not in text


def test_the_pacs_sees_the_rate_and_concurrency_limits(
    tmp_path: Path, hospital: dict[str, HospitalPatient], proxy: CountingProxy, fhir_server: Any
) -> None:
    """requests_per_second spaces every HTTP request to the PACS (QIDO pages and WADO alike);
    max_concurrent bounds the requests in flight (entries fetched at once)."""
    settings = service_config(tmp_path / "data", proxy.url + "/dicom-web", fhir_server.base_url,
                              requests_per_second=8, max_concurrent=2)  # fmt: skip
    core = build_gateway(load_config(**settings))
    export(core, cohort_csv(hospital))
    times = proxy.times
    assert len(times) >= 15
    # slots are 1/8 s apart; one request may arrive late on a busy machine, so the check is
    # that no second holds more than 8 + 1 of them (jitter cannot crowd nine slots together)
    windows = [b - a for a, b in zip(times, times[9:], strict=False)]
    assert min(windows) >= 1.0, "more requests in a second than requests_per_second allows"
    assert (len(times) - 1) / (times[-1] - times[0]) <= 8 * 1.02
    assert proxy.max_in_flight <= 2


def test_study_dates_bound_what_is_fetched(
    tmp_path: Path, hospital: dict[str, HospitalPatient], proxy: CountingProxy, fhir_server: Any
) -> None:
    """The fixtures' studies are of 2024-09-17: --since after it finds none of them (the FHIR
    side still delivers the patients), --until after it finds them all."""
    settings = service_config(tmp_path / "data", proxy.url + "/dicom-web", fhir_server.base_url)
    core = build_gateway(load_config(**settings))
    pacs, ehr = build_pacs(core.config), build_ehr(core.config)
    exporter = Exporter(core, pacs, ehr)
    cohort = parse_cohort(cohort_csv(hospital))
    late = exporter.run(ExportRequest("default", cohort, StudyFilter(since=dt.date(2024, 9, 18))))
    early = exporter.run(ExportRequest("default", cohort, StudyFilter(until=dt.date(2024, 9, 17))))
    core.jobs.drain(240)
    late_report, early_report = export_report(core.db, late), export_report(core.db, early)
    assert late_report is not None and early_report is not None
    assert late_report["dicom"]["studies_fetched"] == 0
    assert late_report["entries"]["found"] == 2, "A and B by their Patient; C is an accession"
    assert early_report["dicom"]["studies_fetched"] == 4
    assert not proxy.retrieves() - Counter(dict.fromkeys(proxy.retrieves(), 1))


def test_a_source_down_fails_its_entries_and_the_next_run_retries_them(
    tmp_path: Path, hospital: dict[str, HospitalPatient], proxy: CountingProxy, fhir_server: Any
) -> None:
    cohort = cohort_csv(hospital)
    pacs_url = proxy.url + "/dicom-web"
    down = service_config(tmp_path / "data", pacs_url,
                          f"http://127.0.0.1:{orthanc_harness.free_port()}/fhir")  # fmt: skip
    first = build_gateway(load_config(**down))
    export_id = export(first, cohort)
    report = export_report(first.db, export_id)
    assert report is not None and report["status"] == "incomplete"
    assert report["entries"]["failed"] == [
        {"row": r, "reason": "source-unavailable", "detail": "FHIR Patient search failed (ConnectionError)"}
        for r in (1, 2, 3, 4)]  # fmt: skip
    assert report["dicom"]["series_fetched"] == 8, "the DICOM side came before the EHR failed"
    first.db.engine.dispose()

    up = build_gateway(load_config(**service_config(tmp_path / "data", pacs_url,
                                                    fhir_server.base_url)))  # fmt: skip
    assert export(up, cohort) == export_id
    report = export_report(up.db, export_id)
    assert report is not None and report["status"] == "done" and report["done"]
    assert report["entries"]["failed"] == [] and report["entries"]["not_found_rows"] == [4]
    assert set(proxy.retrieves().values()) == {1}, "no series fetched twice"
    assert len(proxy.retrieves()) == 8
    assert_linked_cohort(read_store(tmp_path / "data" / "store" / "default"), hospital)


def test_a_fhir_group_cohort(
    tmp_path: Path, hospital: dict[str, HospitalPatient], orthanc: Any, fhir_server: Any
) -> None:
    """Members by MRN identifier and by Patient reference (its MRN then found on the
    Patient, for the DICOM query)."""
    group = {"resourceType": "Group", "type": "person", "actual": True, "member": [
        {"entity": {"identifier": {"system": MRN_SYSTEM, "value": hospital["A"].mrn}}},
        {"entity": {"reference": f"Patient/{hospital['B'].fhir_id}"}},
        {"entity": {"reference": "Patient/no-such-patient"}},
    ]}  # fmt: skip
    core = build_gateway(load_config(**service_config(tmp_path / "data", orthanc.dicomweb_url,
                                                      fhir_server.base_url)))  # fmt: skip
    export_id = export(core, json.dumps(group).encode())
    report = export_report(core.db, export_id)
    assert report is not None and report["done"]
    assert report["entries"]["found"] == 2 and report["entries"]["not_found_rows"] == [3]
    assert report["dicom"]["studies_delivered"] == 3
    store = read_store(tmp_path / "data" / "store" / "default")
    assert sorted(len(s) for s in store["studies"].values()) == [1, 2]
    assert len(store["fhir"]["Patient"]) == 2


def test_a_resource_that_cannot_be_made_safe_is_quarantined_alone_and_reported(
    tmp_path: Path, hospital: dict[str, HospitalPatient], fhir_server: Any
) -> None:
    """EHR only (no PACS configured): B's record holds an Observation whose value is not a
    number (the EHR accepted it); it is quarantined by itself, the rest of B is delivered,
    and the report counts it by reason. An accession-only entry cannot be found without a
    PACS."""
    bad = {"resourceType": "Observation", "id": f"obs-bad-{hospital['B'].fhir_id}",
           "status": "final", "code": {"text": "height"},
           "subject": {"reference": f"Patient/{hospital['B'].fhir_id}"},
           "valueQuantity": {"value": "one hundred"}}  # fmt: skip
    answer = requests.put(f"{fhir_server.base_url}/Observation/{bad['id']}", data=json.dumps(bad),
                          headers={"Content-Type": "application/fhir+json"}, timeout=30)  # fmt: skip
    assert answer.status_code in (200, 201)
    settings = service_config(tmp_path / "data", "unused", fhir_server.base_url)
    del settings["sources"]["pacs"]
    core = build_gateway(load_config(**settings))
    report = export_report(core.db, export(core, cohort_csv(hospital)))
    assert report is not None and report["done"]
    assert report["entries"]["found"] == 2 and report["entries"]["not_found_rows"] == [3, 4]
    assert report["fhir"]["resources_fetched"] == 9
    assert report["fhir"]["resources_delivered"] == 8
    assert report["quarantined_by_reason"] == {"fhir-invalid": 1}, report
    store = read_store(tmp_path / "data" / "store" / "default")
    assert len(store["fhir"]["Observation"]) == 2 and len(store["fhir"]["Patient"]) == 2


def test_the_c_move_receiver_takes_only_what_a_fetch_asked_for_from_the_pacs(tmp_path: Path) -> None:
    """A real C-STORE SCU against the export's receiver: another AE is rejected at association,
    the PACS's AE gets 0xC000 for an instance no fetch waits for and 0x0000 for one it does."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    from gateway.config import DimseConfig
    from gateway.intake.pull.dimse import MoveReceiver
    from tests.dicom_fixtures import Patient, phi_instance

    port = orthanc_harness.free_port()
    receiver = MoveReceiver(MOVE_AE, "THEPACS", DimseConfig(host="127.0.0.1", port=port))
    ds = phi_instance("CT_small.dcm", Patient(), "move-1", "CT", 1)
    try:
        stranger = AE(ae_title="STRANGER")
        stranger.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
        refused = stranger.associate("127.0.0.1", port, ae_title=MOVE_AE)
        assert refused.is_rejected

        pacs = AE(ae_title="THEPACS")
        pacs.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
        assoc = pacs.associate("127.0.0.1", port, ae_title=MOVE_AE)
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0xC000
        waiting = receiver.expect(ds.SeriesInstanceUID)
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        received = pydicom.dcmread(io.BytesIO(waiting.get(timeout=5)))
        assert received.SOPInstanceUID == ds.SOPInstanceUID
    finally:
        receiver.close()


def test_a_pacs_that_does_not_answer_over_dimse_fails_the_entries(tmp_path: Path) -> None:
    settings = service_config(tmp_path / "data", "unused", "unused")
    settings["sources"] = {"pacs": {"type": "dimse", "host": "127.0.0.1", "called_ae": "PACS",
                                    "port": orthanc_harness.free_port(), "timeout_seconds": 5}}  # fmt: skip
    core = build_gateway(load_config(**settings))
    report = export_report(core.db, export(core, b"mrn\nMRN-A\nMRN-B\n"))
    assert report is not None and report["status"] == "incomplete"
    assert [(f["row"], f["reason"]) for f in report["entries"]["failed"]] == [
        (1, "source-unavailable"), (2, "source-unavailable")]  # fmt: skip
    assert report["entries"]["failed"][0]["detail"].startswith("C-FIND study: ")


class AssociationCounter:
    """A TCP relay in front of the PACS's DICOM port: every association the export opens
    (C-FIND study, C-FIND series, C-MOVE: one each) is one connection, counted."""

    def __init__(self, port: int) -> None:
        import socket
        import threading

        self.connections = 0
        self._target = port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._threads = threading
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for a, b in ((client, upstream), (upstream, client)):
                self._threads.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(2)
                except OSError:
                    pass

    def close(self) -> None:
        self._server.close()


def _post_and_wait(client: Any, headers: dict[str, str], cohort: bytes) -> dict[str, Any]:
    started = client.post("/exports?destination=cohort", data=cohort,
                          headers={**headers, "Content-Type": "text/csv"})  # fmt: skip
    assert started.status_code == 202, started.get_json()
    deadline = time.monotonic() + 240
    while True:
        report: dict[str, Any] = client.get(started.headers["Location"], headers=headers).get_json()
        ended = report["done"] or report["status"] in ("incomplete", "failed")  # failed: not done
        if (ended and not report["running"]) or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


def test_post_exports_c_moves_to_the_services_own_c_store_intake(
    tmp_path: Path, dimse_pacs: Any, fhir_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``dimse.enabled``: the PACS moves each series to the service's intake (the gateway's AE
    title), which accepts it for the export's destination ("cohort", not the intake's
    "default"); the export counts the final responses. While the intake is down the moves
    fail (value-free reasons) and the next POST retries them; a third POST asks the PACS
    nothing. The PACS, not on the intake's allow-list, may only send what an export awaits."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    from gateway.intake.dimse import start_scp, stop_scp
    from tests.dicom_fixtures import Patient, phi_instance

    caplog.set_level(logging.DEBUG)
    dimse_pacs.start()
    dimse_pacs.clear()
    patients = make_hospital(dimse_pacs, fhir_server)
    counter = AssociationCounter(dimse_pacs.dicom_port)
    pacs = {"type": "dimse", "host": "127.0.0.1", "port": counter.port, "called_ae": "ORTHANCTEST",
            "calling_ae": PULL_AE, "requests_per_second": 50, "move_destination_ae": MOVE_AE}  # fmt: skip
    port = dimse_pacs.move_port
    app = make_app(
        tmp_path / "data", start_workers=True, retry={"lease_seconds": 3},
        housekeeping_seconds=0.5,
        destinations={"default": {"profile": "research", "calling_ae_titles": ["MODALITY1"]},
                      "cohort": {"profile": "research", "require_signoff": False}},
        dimse={"enabled": True, "host": "127.0.0.1", "port": port, "ae_title": MOVE_AE},
        sources={"pacs": pacs, "ehr": {"type": "fhir", "url": fhir_server.base_url,
                                       "requests_per_second": 50}},
    )  # fmt: skip
    client = app.test_client()
    officer = token(app, Role.PRIVACY_OFFICER)
    cohort = cohort_csv(patients)
    handle = None
    try:
        # the intake is not listening yet: every move fails, nothing is recorded as fetched
        down = _post_and_wait(client, officer, cohort)
        assert down["status"] == "incomplete", down
        failed = down["entries"]["failed"]
        assert [f["row"] for f in failed] == [1, 2, 3]
        assert {f["reason"] for f in failed} == {"source-refused"}
        assert all(f["detail"].startswith("C-MOVE: status 0x") for f in failed), failed
        assert down["dicom"]["series_fetched"] == 0

        handle = start_scp(app)
        before = counter.connections
        report = _post_and_wait(client, officer, cohort)
        assert report["done"] and report["status"] == "done", report
        # rows 1-3 again (row 4 was settled not-found): 3 C-FIND study, 4 C-FIND series
        # (one per study), 8 C-MOVE (one per series)
        assert counter.connections - before == 3 + 4 + 8
        assert report["dicom"]["routes"] == ["c-move"]
        assert report["dicom"]["series_fetched"] == 8
        assert report["dicom"]["instances_fetched"] == 8
        assert report["dicom"]["studies_delivered"] == 4
        assert report["entries"]["failed"] == [] and report["entries"]["not_found_rows"] == [4]
        store = read_store(tmp_path / "data" / "store" / "cohort")
        assert_linked_cohort(store, patients)
        assert not (tmp_path / "data" / "store" / "default").exists() or read_store(
            tmp_path / "data" / "store" / "default")["instances"] == 0  # fmt: skip
        with gw(app).db.session() as session:
            channels = Counter(session.scalars(select(Job.channel)))
            assert not session.scalars(select(ExportMove)).all(), "no move left in flight"
        assert channels["pull-c-move"] == 8 and channels["c-store"] == 0

        # the same export again: settled, not one association to the PACS
        before = counter.connections
        again = _post_and_wait(client, officer, cohort)
        assert again["status"] == "done" and counter.connections == before
        assert read_store(tmp_path / "data" / "store" / "cohort") == store

        # the PACS's AE is let in for moves only: a series no export awaits is refused
        ae = AE(ae_title="ORTHANCTEST")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title=MOVE_AE)
        assert assoc.is_established
        try:
            status = assoc.send_c_store(phi_instance("CT_small.dcm", Patient(), "stray", "CT", 1))
            assert int(status.Status) == 0xC000
        finally:
            assoc.release()
    finally:
        counter.close()
        if handle is not None:
            stop_scp(handle, grace_seconds=1.0)
        gw(app).stop_workers()
    assert_no_identifier_in(caplog.text, patients)


def test_failed_c_move_sub_operations_fail_the_entry_and_a_rerun_moves_only_that_series(
    tmp_path: Path, dimse_pacs: Any, fhir_server: Any
) -> None:
    """The intake full (``max_backlog: 1``, no workers yet): the first series of B is moved,
    the second one's sub-operation is refused (0xA700), so the final response is a failure:
    B fails with a value-free reason; the next run moves the second series only."""
    from gateway.intake.dimse import start_scp, stop_scp

    dimse_pacs.start()
    dimse_pacs.clear()
    patients = make_hospital(dimse_pacs, fhir_server)
    counter = AssociationCounter(dimse_pacs.dicom_port)
    pacs = {"type": "dimse", "host": "127.0.0.1", "port": counter.port, "called_ae": "ORTHANCTEST",
            "calling_ae": PULL_AE, "requests_per_second": 50, "move_destination_ae": MOVE_AE}  # fmt: skip
    app = make_app(
        tmp_path / "data", retry={"lease_seconds": 3}, housekeeping_seconds=0.5,
        limits={"max_backlog": 1},
        destinations={"default": {"profile": "research"},
                      "cohort": {"profile": "research", "require_signoff": False}},
        dimse={"enabled": True, "host": "127.0.0.1", "port": dimse_pacs.move_port,
               "ae_title": MOVE_AE},
        sources={"pacs": pacs, "ehr": {"type": "fhir", "url": fhir_server.base_url,
                                       "requests_per_second": 50}},
    )  # fmt: skip
    client = app.test_client()
    officer = token(app, Role.PRIVACY_OFFICER)
    cohort = f"mrn\n{patients['B'].mrn}\n".encode()
    handle = start_scp(app)
    try:
        full = _post_and_wait(client, officer, cohort)
        assert full["status"] == "incomplete", full
        (failed,) = full["entries"]["failed"]
        assert failed["row"] == 1 and failed["reason"] == "source-refused"
        # Orthanc answers a move whose C-STORE failed with 0xC000 (counts 0); a PACS counting
        # Failed sub-operations fails the series the same way (DimsePacs.relay_series)
        assert failed["detail"].startswith("C-MOVE: status 0x"), failed
        assert not failed["detail"].startswith("C-MOVE: status 0x0000"), failed
        assert full["dicom"]["series_fetched"] == 1

        gw(app).start_workers()
        deadline = time.monotonic() + 120
        while gw(app).jobs.backlog(include_pending=False) and time.monotonic() < deadline:
            time.sleep(0.2)  # the moved series through the pipeline: room for the next
        time.sleep(1.1)  # the intake's backlog count is cached for a second
        before = counter.connections
        report = _post_and_wait(client, officer, cohort)
        assert report["done"] and report["status"] == "done", report
        assert counter.connections - before == 1 + 1 + 1, "C-FIND study, series, one C-MOVE"
        assert report["dicom"]["series_fetched"] == 2 and report["dicom"]["instances_fetched"] == 2
        store = read_store(tmp_path / "data" / "store" / "cohort")
        assert store["instances"] == 2 and len(store["studies"]) == 1
    finally:
        counter.close()
        stop_scp(handle, grace_seconds=1.0)
        gw(app).stop_workers()


def test_post_exports_refuses_a_c_move_to_another_ae_than_the_services_intake(
    tmp_path: Path,
) -> None:
    pacs = {"type": "dimse", "host": "127.0.0.1", "port": 104, "called_ae": "PACS",
            "move_destination_ae": "ELSEWHERE"}  # fmt: skip
    app = make_app(tmp_path / "data", sources={"pacs": pacs},
                   dimse={"enabled": True, "ae_title": MOVE_AE})  # fmt: skip
    answer = app.test_client().post("/exports", data=b"mrn\nMRN-A\n", headers={
        **token(app, Role.PRIVACY_OFFICER), "Content-Type": "text/csv"})  # fmt: skip
    assert answer.status_code == 409
    assert answer.get_json()["error"] == "configuration-invalid"
    assert "dimse.ae_title" in answer.get_json()["detail"]


def test_a_c_move_receiver_port_in_use_is_a_configuration_error(tmp_path: Path) -> None:
    from gateway.config import DimseConfig
    from gateway.errors import ConfigurationError
    from gateway.intake.pull.dimse import MoveReceiver

    port = orthanc_harness.free_port()
    first = MoveReceiver(MOVE_AE, "THEPACS", DimseConfig(host="127.0.0.1", port=port))
    try:
        with pytest.raises(ConfigurationError, match="EADDRINUSE"):
            MoveReceiver(MOVE_AE, "THEPACS", DimseConfig(host="127.0.0.1", port=port))
    finally:
        first.close()
