"""DICOM header de-identification through the CLI on PHI-laden fixtures from real images."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pydicom
import pytest

from gateway.cli.main import main
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.profiles import load_profile
from tests.dicom_fixtures import Patient, all_text, sr_with_phi, write_study

PATIENT = Patient()


def run_cli(*args: str) -> int:
    return main(["deidentify", "--quiet", *args])


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    write_study(folder / "study", PATIENT)
    sr = sr_with_phi(PATIENT)
    sr.save_as(folder / "study" / "report.dcm", enforce_file_format=True)
    return folder


@pytest.fixture()
def output(study: Path, tmp_path: Path) -> Path:
    out = tmp_path / "research"
    assert run_cli("--input", str(study), "--output", str(out), "--profile", "research") == 0
    return out


def outputs(root: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(root.rglob("*.dcm"))]


def test_no_phi_survives_anywhere_raw_bytes_included(output: Path) -> None:
    files = sorted(output.rglob("*.dcm"))
    assert len(files) == 4
    for path in files:
        raw = path.read_bytes().upper()
        text = all_text(pydicom.dcmread(path)).upper()
        for phi in PATIENT.phi_strings() + ["NAT-99812377", "ACME PATIENT INFO"]:
            assert phi.upper().encode() not in raw, f"{phi} in bytes of {path.name}"
            assert phi.upper() not in text
        for part in str(path.relative_to(output)).split("/"):
            assert PATIENT.family not in part and PATIENT.patient_id not in part


def test_layout_is_patient_study_series_sop(output: Path) -> None:
    for path in output.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        rel = path.relative_to(output).parts
        assert rel == (
            ds.PatientID,
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            f"{ds.SOPInstanceUID}.dcm",
        )
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_uids_remapped_consistently_and_references_intact(output: Path, study: Path) -> None:
    originals = {pydicom.dcmread(p).SOPInstanceUID for p in study.rglob("*.dcm")}
    images = [ds for ds in outputs(output) if ds.Modality in ("CT", "MR")]
    assert len({ds.StudyInstanceUID for ds in images}) == 1
    assert len({ds.FrameOfReferenceUID for ds in images}) == 1
    sops = {ds.SOPInstanceUID for ds in images}
    assert not sops & originals
    for ds in images:
        assert ds.StudyInstanceUID.startswith("2.25.") and len(ds.StudyInstanceUID) <= 64
        assert ds.SOPClassUID.startswith("1.2.840.10008.")  # class UIDs untouched
        if "ReferencedImageSequence" in ds:
            assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID in sops


def test_same_output_across_runs(study: Path, tmp_path: Path, output: Path) -> None:
    again = tmp_path / "again"
    assert run_cli("--input", str(study), "--output", str(again)) == 0
    assert tree_digest(again) == tree_digest(output)


def test_markers_present(output: Path) -> None:
    for ds in outputs(output):
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethod.startswith("deid-gateway research v")
        codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
        assert {"113100", "113105", "113107", "113108", "113103", "113104"} <= codes
        assert all(item.CodingSchemeDesignator == "DCM" for item in ds.DeidentificationMethodCodeSequence)
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_dates_shift_by_the_patients_offset(output: Path) -> None:
    profile = load_profile("research")
    linkage = Linkage.from_profile(profile, KeyRing())
    person = linkage.person_from_dicom(PATIENT.patient_id, PATIENT.issuer)
    expected = (
        dt.datetime.strptime(PATIENT.study_date, "%Y%m%d").date()
        + dt.timedelta(days=person.date_offset_days)
    ).strftime("%Y%m%d")
    images = [ds for ds in outputs(output) if ds.Modality in ("CT", "MR")]
    for ds in images:
        assert ds.PatientID == person.patient_id
        assert ds.StudyDate == ds.SeriesDate == ds.ContentDate == expected
        assert "PatientBirthDate" not in ds or not ds.PatientBirthDate
        assert ds.PatientAge == "077Y"  # Retain Patient Characteristics
        assert ds.PatientSex == "F"


def test_retained_attributes_and_pixels_unchanged(output: Path, study: Path) -> None:
    by_number = {}
    for path in sorted(study.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.Modality in ("CT",):
            by_number[ds.InstanceNumber] = ds
    checked = 0
    for ds in outputs(output):
        original = by_number.get(ds.get("InstanceNumber"))
        if original is None or ds.Modality != "CT":
            continue
        for keyword in ("Modality", "Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
                        "ImageOrientationPatient", "SliceThickness", "KVP", "SeriesDescription"):
            assert ds.get(keyword) == original.get(keyword), keyword
        assert ds.PixelData == original.PixelData
        checked += 1
    assert checked == 2


def test_clean_descriptors_keep_useful_text(output: Path) -> None:
    image = next(ds for ds in outputs(output) if ds.Modality == "CT")
    assert image.StudyDescription.startswith("CT chest for [PERSON]")
    assert PATIENT.phone not in image.StudyDescription


def test_private_and_nested_phi_removed(output: Path) -> None:
    for ds in outputs(output):
        assert not any(elem.tag.is_private for elem in ds.iterall())
        assert "OtherPatientIDsSequence" not in ds
        for item in ds.get("RequestAttributesSequence", []):
            assert "RequestingPhysician" not in item or PATIENT.physician not in str(item.RequestingPhysician)


def test_structured_report_content_cleaned(output: Path) -> None:
    sr = next(ds for ds in outputs(output) if ds.Modality == "SR")
    text = sr.ContentSequence[0].TextValue
    assert "4 mm nodule in the right upper lobe" in text
    assert PATIENT.family.title() not in text and PATIENT.patient_id not in text
    assert sr.ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning == "Finding"
    assert sr.ContentSequence[1].Date != PATIENT.study_date


def test_jobs_give_identical_output(study: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli("--input", str(study), "--output", str(one), "--profile", "basic", "--jobs", "1") == 0
    assert run_cli("--input", str(study), "--output", str(two), "--profile", "basic", "--jobs", "2") == 0
    assert tree_digest(one) == tree_digest(two)
    assert len(tree_digest(one)) == 4


def test_basic_profile_removes_dates_and_descriptors(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "basic"
    assert run_cli("--input", str(study), "--output", str(out), "--profile", "basic") == 0
    for ds in outputs(out):
        assert not ds.get("StudyDate")
        assert "StudyDescription" not in ds or not ds.StudyDescription
        assert ds.LongitudinalTemporalInformationModified == "REMOVED"
        assert {i.CodeValue for i in ds.DeidentificationMethodCodeSequence} == {"113100"}


def test_safe_harbor_keeps_year_only_and_caps_age(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "sh"
    old = tmp_path / "old"
    write_study(old, Patient(patient_id="MRN000777", family="OLDFIELD"), "study-old", ("CT_small.dcm",))
    for path in old.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientAge = "093Y"
        ds.save_as(path)
    code = run_cli("--input", str(old), "--output", str(out), "--profile", "safe-harbor")
    images = [ds for ds in outputs(out) if ds.Modality == "CT"]
    assert code == 0 and images
    for ds in images:
        assert ds.StudyDate == PATIENT.study_date[:4] + "0101"
        assert ds.PatientAge == "090Y"


def test_bad_input_quarantined_with_reason_and_run_continues(study: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not dicom at all")
    good = min(study.rglob("*.dcm")).read_bytes()
    (bad / "truncated.dcm").write_bytes(good[: len(good) // 3])
    raw = pydicom.dcmread(max(study.rglob("*.dcm")))
    raw.preamble = None
    del raw.file_meta  # a bare dataset: DICOM content, no Part 10 preamble or meta: read
    pydicom.dcmwrite(bad / "nometa.dcm", raw, enforce_file_format=False)
    (bad / "good.dcm").write_bytes(good)
    out, quarantine = tmp_path / "out", tmp_path / "q"
    code = run_cli("--input", str(bad), "--output", str(out), "--quarantine", str(quarantine))
    assert code == 1
    reasons = {
        json.loads(p.read_text())["source"].rsplit("/", 1)[-1]: json.loads(p.read_text())["reason"]
        for p in quarantine.glob("*.reason.json")
    }
    assert reasons["notes.txt"] == "not-dicom"
    assert "nometa.dcm" not in reasons  # old archives' bare datasets are de-identified
    assert reasons["truncated.dcm"] in ("truncated", "undecodable-value")
    assert len(list(out.rglob("*.dcm"))) == 2
    for reason_file in quarantine.glob("*.reason.json"):
        assert PATIENT.family not in json.loads(reason_file.read_text())["detail"]
    assert (quarantine.stat().st_mode & 0o777) == 0o700


def test_cli_reports_one_line_per_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "x.bin").write_bytes(b"\x00" * 300)
    assert main(["deidentify", "--input", str(bad), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert f"{bad / 'x.bin'}: quarantined (not-dicom)" in err
    assert "quarantined  1" in err and "files/s" in err


def test_dicomdir_is_dropped(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    source = Path(get_testdata_file("DICOMDIR"))
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "DICOMDIR").write_bytes(source.read_bytes())
    out = tmp_path / "o"
    assert run_cli("--input", str(folder), "--output", str(out)) == 0
    assert not list(out.rglob("*DICOMDIR*")) and not list(out.rglob("*.dcm"))


@pytest.mark.parametrize("keyword", ["Manufacturer", "ManufacturerModelName", "SoftwareVersions"])
def test_verification_gate_quarantines_a_surviving_identifier(keyword: str, tmp_path: Path) -> None:
    """PHI hidden in an attribute the profile keeps (unlisted) or cleans must never be written:
    the gate finds the patient's MRN / name and quarantines the instance."""
    folder = tmp_path / "in"
    (path,) = write_study(folder, PATIENT, sources=("CT_small.dcm",))
    ds = pydicom.dcmread(path)
    setattr(ds, keyword, f"x {PATIENT.patient_id} x")  # not in Table E.1-1: kept, then caught
    ds.save_as(path)
    out, quarantine = tmp_path / "out", tmp_path / "q"
    code = run_cli("--input", str(folder), "--output", str(out), "--quarantine", str(quarantine), "--profile", "basic")
    written = list(out.rglob("*.dcm"))
    assert code == 1 and not written
    (reason,) = [json.loads(p.read_text()) for p in quarantine.glob("*.reason.json")]
    assert reason["reason"] == "verification-failed"
    assert PATIENT.patient_id not in reason["detail"]
