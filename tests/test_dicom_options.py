"""Profile options change exactly what the standard says, and only applied options are claimed."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import yaml

from gateway.cli.main import main
from tests.dicom_fixtures import Patient, write_study

PATIENT = Patient()
BASIC = Path(__file__).resolve().parents[1] / "profiles" / "basic.yaml"


def profile_with(tmp_path: Path, options: list[str], **dicom: object) -> Path:
    data = yaml.safe_load(BASIC.read_text())
    data["name"] = "test-" + "-".join(o.split("_")[1] for o in options) if options else "test-none"
    data["dicom"]["options"] = options
    data["dicom"].update(dicom)
    data.pop("fhir", None)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(tmp_path: Path, profile: Path) -> list[pydicom.Dataset]:
    source = tmp_path / "in"
    if not source.exists():
        write_study(source, PATIENT, sources=("CT_small.dcm",))
    out = tmp_path / "out"
    assert main(["deidentify", "--quiet", "--input", str(source), "--output", str(out),
                 "--profile", str(profile)]) == 0
    return [pydicom.dcmread(p) for p in out.rglob("*.dcm")]


def codes(ds: pydicom.Dataset) -> set[str]:
    return {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}


def test_retain_uids(tmp_path: Path) -> None:
    original = pydicom.dcmread(next(iter(sorted(write_study(tmp_path / "in", PATIENT, sources=("CT_small.dcm",))))))
    (ds,) = run(tmp_path, profile_with(tmp_path, ["retain_uids"]))
    assert ds.StudyInstanceUID == original.StudyInstanceUID
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert codes(ds) == {"113100", "113110"}


def test_retain_full_dates(tmp_path: Path) -> None:
    (ds,) = run(tmp_path, profile_with(tmp_path, ["retain_longitudinal_full_dates"]))
    assert ds.StudyDate == PATIENT.study_date
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "113106" in codes(ds)


def test_retain_device_and_institution_identity(tmp_path: Path) -> None:
    original = pydicom.dcmread(next(iter(write_study(tmp_path / "in", PATIENT, sources=("CT_small.dcm",)))))
    (ds,) = run(tmp_path, profile_with(
        tmp_path, ["retain_device_identity", "retain_institution_identity"]))
    assert ds.InstitutionName == PATIENT.institution
    assert ds.StationName == original.StationName
    assert {"113109", "113112"} <= codes(ds)


def test_retain_safe_private_keeps_only_listed_block_elements(tmp_path: Path) -> None:
    profile = profile_with(
        tmp_path, ["retain_safe_private"],
        safe_private=[{"creator": "GEMS_PARM_01", "group": 0x0043, "elements": [0x10, 0x11]}],
    )
    original = pydicom.dcmread(next(iter(write_study(tmp_path / "in", PATIENT, sources=("CT_small.dcm",)))))
    block = original.private_block(0x0043, "GEMS_PARM_01")
    (ds,) = run(tmp_path, profile)
    kept = ds.private_block(0x0043, "GEMS_PARM_01")
    assert kept[0x10].value == block[0x10].value
    assert kept[0x11].value == block[0x11].value
    assert 0x12 not in kept
    with pytest.raises(KeyError):
        ds.private_block(0x0029, "ACME PATIENT INFO")
    assert "113111" in codes(ds)


def test_override_by_tag_and_set(tmp_path: Path) -> None:
    profile = profile_with(
        tmp_path, [],
        overrides=[
            {"attribute": "PatientID", "action": "patient-pseudonym"},
            {"attribute": "(0008,1030)", "action": "set", "value": "RESEARCH STUDY"},
            {"attribute": "SeriesDescription", "action": "remove"},
        ],
    )
    (ds,) = run(tmp_path, profile)
    assert ds.StudyDescription == "RESEARCH STUDY"
    assert "SeriesDescription" not in ds


def test_clean_graphics_cleans_annotation_text_and_keeps_the_rest(tmp_path: Path) -> None:
    """GraphicAnnotationSequence (Clean Graphics: C) keeps its structure and coordinates; the
    free text of its text objects loses the patient's identifiers."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    folder = tmp_path / "in"
    (path,) = write_study(folder, PATIENT, sources=("CT_small.dcm",))
    ds = pydicom.dcmread(path)
    text = Dataset()
    text.UnformattedTextValue = f"{PATIENT.given.title()} {PATIENT.family.title()} lesion 12 mm"
    text.AnchorPointAnnotationUnits = "PIXEL"
    text.AnchorPoint = [10.0, 20.0]
    text.AnchorPointVisibility = "N"
    layer = Dataset()
    layer.GraphicLayer = "MEASURE"
    layer.TextObjectSequence = Sequence([text])
    ds.GraphicAnnotationSequence = Sequence([layer])
    ds.save_as(path)
    out = tmp_path / "out"
    assert main(["deidentify", "--quiet", "--input", str(folder), "--output", str(out),
                 "--profile", "research"]) == 0
    (written,) = [pydicom.dcmread(p) for p in out.rglob("*.dcm")]
    cleaned = written.GraphicAnnotationSequence[0].TextObjectSequence[0]
    assert "lesion 12 mm" in cleaned.UnformattedTextValue
    assert PATIENT.family.title() not in cleaned.UnformattedTextValue
    assert [float(v) for v in cleaned.AnchorPoint] == [10.0, 20.0]
    assert "113103" in codes(written)
