"""An instance de-identified before keeps its history: earlier method codes and description stay,
the new ones are added beside them, nothing twice."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.cli.main import main
from tests.dicom_fixtures import Patient, write_study

PATIENT = Patient()
EARLIER_METHOD = "CTP DicomAnonymizer 2019"


def run(source: Path, out: Path, profile: str) -> pydicom.Dataset:
    assert main(["deidentify", "--quiet", "--input", str(source), "--output", str(out),
                 "--profile", profile]) == 0
    (written,) = list(out.rglob("*.dcm"))
    return pydicom.dcmread(written)


def codes(ds: pydicom.Dataset) -> list[tuple[str, str]]:
    return [(i.CodingSchemeDesignator, i.CodeValue) for i in ds.DeidentificationMethodCodeSequence]


def methods(ds: pydicom.Dataset) -> list[str]:
    value = ds.DeidentificationMethod
    return list(value) if isinstance(value, pydicom.multival.MultiValue) else [str(value)]


def code_item(scheme: str, value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def earlier_deidentified(folder: Path) -> Path:
    """A real image that another tool de-identified: its markers as that tool wrote them."""
    (path,) = write_study(folder, PATIENT, sources=("CT_small.dcm",))
    ds = pydicom.dcmread(path)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = EARLIER_METHOD
    ds.DeidentificationMethodCodeSequence = Sequence([
        code_item("DCM", "113100", "Basic Application Confidentiality Profile"),
        code_item("99CTP", "CTP-7", "Local pseudonymisation script"),
        code_item("DCM", "113100", "Basic Application Confidentiality Profile"),  # twice
    ])
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.save_as(path, enforce_file_format=True)
    return folder


def test_earlier_codes_and_method_are_kept_beside_the_new(tmp_path: Path) -> None:
    ds = run(earlier_deidentified(tmp_path / "in"), tmp_path / "out", "research")
    found = codes(ds)
    assert found[:2] == [("DCM", "113100"), ("99CTP", "CTP-7")]  # the earlier ones, first
    assert len(found) == len(set(found))  # no duplicates (113100 was there already, twice)
    assert {("DCM", "113107"), ("DCM", "113108"), ("DCM", "113105")} <= set(found)  # the new
    assert methods(ds)[0] == EARLIER_METHOD
    assert methods(ds)[1].startswith("deid-gateway research v")
    assert len(methods(ds)) == 2


def test_a_second_pass_adds_only_what_is_new(tmp_path: Path) -> None:
    write_study(tmp_path / "in", PATIENT, sources=("CT_small.dcm",))
    first = run(tmp_path / "in", tmp_path / "out1", "basic")
    assert codes(first) == [("DCM", "113100")]
    again = tmp_path / "again"
    again.mkdir()
    first.save_as(again / "x.dcm", enforce_file_format=True)
    second = run(again, tmp_path / "out2", "research")
    assert codes(second)[0] == ("DCM", "113100")
    assert len(codes(second)) == len(set(codes(second))) > 1
    assert [m.split(" v")[0] for m in methods(second)] == [
        "deid-gateway basic", "deid-gateway research"]
    same = tmp_path / "same"
    same.mkdir()
    second.save_as(same / "x.dcm", enforce_file_format=True)
    third = run(same, tmp_path / "out3", "research")
    assert codes(third) == codes(second)  # the same profile again: nothing new to claim
    assert methods(third) == methods(second)


def test_dates_modified_before_are_not_reported_unmodified(tmp_path: Path) -> None:
    import yaml

    basic = Path(__file__).resolve().parents[1] / "profiles" / "basic.yaml"
    data = yaml.safe_load(basic.read_text())
    data["name"] = "keep-dates"
    data["dicom"]["options"] = ["retain_longitudinal_full_dates"]
    data.pop("fhir", None)
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump(data, sort_keys=False))
    ds = run(earlier_deidentified(tmp_path / "in"), tmp_path / "out", str(profile))
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
