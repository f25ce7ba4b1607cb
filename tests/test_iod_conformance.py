"""De-identified output is as conformant as its input, by the standard's own validator.

Every pydicom test file that ``dciodvfy`` (dicom3tools) can read, and a PHI-laden copy of each
(filled as scanners fill them: tests/iod_fixtures.py), is de-identified with each shipped
profile; the output's dciodvfy errors must be a subset of the input's. Compound codes are also
checked without the validator, against the IOD table (gateway/dicom/_standard).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from gateway.dicom import conformance
from gateway.dicom.compound import BY_NEED, action_for
from gateway.dicom.iod import TYPES_PATH, AttributeType, load_iod_table
from gateway.dicom.reader import read_dicom
from gateway.dicom.standard import load_table
from gateway.errors import DeidError, DropError
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.pipeline.dicom_stages import DicomProcessor
from gateway.profiles.loader import load_profile
from gateway.profiles.model import Action
from gateway.stores.folder import FolderStore
from tests.dicom_fixtures import Patient
from tests.iod_fixtures import TEST_FILES, add_scanner_phi, write_corpus

PROFILES = ["basic", "research", "safe-harbor"]
CT = "1.2.840.10008.5.1.4.1.1.2"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
needs_validator = pytest.mark.skipif(
    not conformance.is_available(), reason=f"needs {conformance.missing_dependency()}"
)


# --------------------------------------------------------------------------- the corpus
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, conformance.Findings]]:
    """(input, its dciodvfy findings) for every readable test file and PHI-laden copy."""
    if not conformance.is_available():
        pytest.skip(f"needs {conformance.missing_dependency()}")
    phi = write_corpus(tmp_path_factory.mktemp("phi"), Patient())
    inputs = sorted(p for p in TEST_FILES.iterdir() if p.is_file()) + phi
    with ThreadPoolExecutor(max_workers=2) as pool:  # dciodvfy is a subprocess: run two
        found = list(pool.map(conformance.validate, inputs))
    return [(p, f) for p, f in zip(inputs, found, strict=True) if f is not None and f.iod]


def _deidentified(profile: str, inputs: list[Path], out: Path) -> Iterator[tuple[Path, Path]]:
    """(input, output) for each input that the profile delivers; one folder per input, since
    several samples share a SOPInstanceUID (one image in many transfer syntaxes)."""
    loaded = load_profile(profile)
    processor = DicomProcessor(loaded, Linkage.from_profile(loaded, KeyRing()))
    for number, path in enumerate(inputs):
        try:
            done = processor.process(read_dicom(path))
        except (DropError, DeidError):
            continue  # dropped or quarantined: nothing delivered, nothing to validate
        root = out / str(number)
        yield path, root / FolderStore(root).put_dicom(done.dataset)


@needs_validator
@pytest.mark.parametrize("profile", PROFILES)
def test_output_is_as_conformant_as_its_input(
    profile: str, corpus: list[tuple[Path, conformance.Findings]], tmp_path: Path
) -> None:
    before = dict(corpus)
    worse: dict[str, list[str]] = {}
    compared = phi_compared = 0
    pairs = list(_deidentified(profile, list(before), tmp_path))
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = list(pool.map(conformance.validate, [output for _, output in pairs]))
    for (source, _), after in zip(pairs, found, strict=True):
        assert after is not None, f"{source.name}: the output is unreadable to dciodvfy"
        assert after.iod == before[source].iod, source.name
        added = conformance.new_errors(before[source], after)
        if added:
            worse[source.name] = sorted(added)
        compared += 1
        phi_compared += source.name.endswith("_phi.dcm")
    assert not worse, json.dumps(worse, indent=1)
    assert compared >= 70 and phi_compared >= 40, (compared, phi_compared)  # safe-harbor: 78, 53


@needs_validator
def test_the_comparison_sees_a_broken_output(tmp_path: Path) -> None:
    """The check can fail: an empty Type 3 sequence is a new error, a removed one is not."""
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    add_scanner_phi(ds, Patient())
    source = tmp_path / "in.dcm"
    ds.save_as(source)
    ds.ReferencedStudySequence = Sequence()  # what X/Z -> Z did before issue 17
    ds.PatientName = None
    del ds.StudyInstanceUID
    broken = tmp_path / "broken.dcm"
    ds.save_as(broken)
    before, after = conformance.validate(source), conformance.validate(broken)
    assert before is not None and after is not None
    added = " ".join(conformance.new_errors(before, after))
    assert "ReferencedStudySequence" in added and "StudyInstanceUID" in added
    del ds.ReferencedStudySequence
    ds.StudyInstanceUID = "2.25.123456789"
    fixed = tmp_path / "fixed.dcm"
    ds.save_as(fixed)
    repaired = conformance.validate(fixed)
    assert repaired is not None and not conformance.new_errors(before, repaired)
    comparisons = conformance.less_conformant([(source, broken), (source, fixed)])
    assert [c.output for c in comparisons] == [broken]


def test_normalised_messages_hide_values() -> None:
    message = 'Error - Value invalid for this VR - (0x0008,0x1155) UI Referenced SOP Instance UID  UI [1] = <1.2.3.4.5.0> - x "9.8.7"'
    text = conformance.normalise(message)
    assert "1.2.3.4" not in text and "9.8.7" not in text and "(0x0008,0x1155)" in text
    assert conformance.normalise("Missing attribute Type 2 Required") != conformance.normalise(
        "Missing attribute Type 1 Required"
    )


# --------------------------------------------------------------------------- the IOD table
def test_iod_table_knows_the_standard() -> None:
    """A few types every reader of PS3.3 knows; the edition is noted."""
    table = load_iod_table()
    assert table.edition and json.loads(TYPES_PATH.read_text())["source"]
    ct = table.for_sop_class(CT)
    assert ct is not None and ct.iod == "ct-image"
    assert ct.type_of(0x0020000D, None) is AttributeType.TYPE_1  # StudyInstanceUID
    assert ct.type_of(0x00100020, None) is AttributeType.TYPE_2  # PatientID
    assert ct.type_of(0x00081110, None) is AttributeType.TYPE_3  # ReferencedStudySequence
    assert ct.type_of(0x00081155, 0x00081110) is AttributeType.TYPE_1  # ...its items' UID
    assert ct.type_of(0x00081110, 0x00400275) is AttributeType.TYPE_3  # in Request Attributes
    assert ct.type_of(0x300A00B2, None) is None  # TreatmentMachineName: not a CT attribute
    plan = table.for_sop_class(RT_PLAN)
    assert plan is not None and plan.type_of(0x00081070, None) is AttributeType.TYPE_2
    assert table.for_sop_class("1.2.3.4.5") is None
    assert len(table.sop_classes) > 150
    assert TYPES_PATH.stat().st_size < 2_000_000


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "build_iod_types", Path(__file__).resolve().parents[1] / "scripts" / "build_iod_types.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, files: dict[str, Any]) -> Path:
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data))
    return folder


def test_generator_takes_the_strictest_type_from_both_source_layouts(tmp_path: Path) -> None:
    """The same IOD in innolitics' layout and in highdicom's reduce to the same table:
    strictest type over the IOD's modules (M, C and U alike), nested pairs by sequence."""
    build = _generator()
    innolitics = _write(
        tmp_path / "innolitics",
        {
            "sops.json": [{"id": "1.2.3", "ciod": "Toy Image", "name": "Toy Image Storage"}],
            "ciods.json": [{"name": "Toy Image", "id": "toy-image"}],
            "ciod_to_modules.json": [
                {"ciodId": "toy-image", "moduleId": "a", "usage": "M"},
                {"ciodId": "toy-image", "moduleId": "b", "usage": "C"},
            ],
            "module_to_attributes.json": [
                {"moduleId": "a", "path": "a:00081110", "type": "3"},
                {"moduleId": "a", "path": "a:00081110:00081155", "type": "1"},
                {"moduleId": "a", "path": "a:00100020", "type": "2"},
                {"moduleId": "b", "path": "b:00100020", "type": "1C"},
                {"moduleId": "b", "path": "b:00081070", "type": "None"},
            ],
        },
    )
    highdicom = _write(
        tmp_path / "highdicom",
        {
            "sop_class_iod_map.json": {"1.2.3": "toy-image"},
            "iod_module_map.json": {
                "toy-image": [{"key": "a", "usage": "M"}, {"key": "b", "usage": "C"}]
            },
            "module_attribute_map.json": {
                "a": [
                    {"keyword": "ReferencedStudySequence", "type": "3", "path": []},
                    {
                        "keyword": "ReferencedSOPInstanceUID",
                        "type": "1",
                        "path": ["ReferencedStudySequence"],
                    },
                    {"keyword": "PatientID", "type": "2", "path": []},
                ],
                "b": [
                    {"keyword": "PatientID", "type": "1C", "path": []},
                    {"keyword": "OperatorsName", "type": "None", "path": []},
                ],
            },
        },
    )
    one = build.reduce(*build.read_innolitics(innolitics))
    other = build.reduce(*build.read_highdicom(highdicom))
    assert one == other
    assert one["sop_classes"] == {"1.2.3": "toy-image"}
    assert one["iods"]["toy-image"] == {"1C": "00100020", "3": "00081110"}
    assert one["nested"] == {"1": "00081110/00081155"}


def test_every_compound_code_of_the_table_has_a_branch_per_type() -> None:
    codes = {row.basic for row in load_table().rows if "/" in row.basic}
    assert codes == set(BY_NEED)
    for code in codes:
        letters = set(code.rstrip("*").split("/"))
        for kind in [*AttributeType, None]:
            action = action_for(code, kind)
            if kind in (AttributeType.TYPE_1, AttributeType.TYPE_1C):
                assert action in (Action.DUMMY, Action.UID), (code, kind)  # never empty
            elif kind in (AttributeType.TYPE_2, AttributeType.TYPE_2C):
                assert action is not Action.REMOVE, (code, kind)  # must stay present
            else:
                assert action is (Action.REMOVE if "X" in letters else Action.EMPTY), (code, kind)


# --------------------------------------------------------------------------- compound codes
def _deid(ds: Dataset, profile: str = "basic") -> Dataset:
    loaded = load_profile(profile)
    processor = DicomProcessor(loaded, Linkage.from_profile(loaded, KeyRing()))
    return processor.process(ds).dataset


def _scanner_ct(sop_class: str = CT) -> Dataset:
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    add_scanner_phi(ds, Patient())
    ds.SOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    return ds


@pytest.mark.parametrize("profile", PROFILES)
def test_type_3_sequences_are_removed_not_emptied(profile: str) -> None:
    out = _deid(_scanner_ct(), profile)
    assert "ReferencedStudySequence" not in out  # X/Z, Type 3 in the CT Image IOD
    assert "ReferencedPerformedProcedureStepSequence" not in out  # X/Z/D, Type 3
    for item in out.get("RequestAttributesSequence", []):
        assert "ReferencedStudySequence" not in item  # Type 3 in the Request Attributes macro
        assert "RequestedProcedureDescription" not in item or profile != "basic"


def test_type_2_attribute_is_emptied_and_type_3_removed_in_the_same_code() -> None:
    """OperatorsName (X/Z/D) is Type 2 in RT Series (RT Dose), Type 3 in General Series (CT)."""
    ct = _deid(_scanner_ct())
    assert "OperatorsName" not in ct
    ds = pydicom.dcmread(TEST_FILES / "rtdose.dcm")
    add_scanner_phi(ds, Patient())
    assert ds.SOPClassUID == RT_DOSE
    dose = _deid(ds)
    assert "OperatorsName" in dose and dose.OperatorsName in (None, "")


def test_unknown_sop_class_keeps_the_least_destructive_choice() -> None:
    """A SOP class the table does not know: X/Z -> Z, as before issue 17."""
    out = _deid(_scanner_ct("1.2.826.0.1.3680043.10.1234.999"))
    assert out.ReferencedStudySequence == Sequence()


# --------------------------------------------------------------------------- profile explain
def _explain(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, str]]:
    from gateway.cli.main import main

    assert main(["profile", "explain", *args, "--format", "json"]) == 0
    return {
        r["tag"]: r
        for r in json.loads(capsys.readouterr().out)["rules"]
        if r["standard"] == "DICOM"
    }


def test_explain_says_by_iod_and_shows_the_branch_per_iod(
    capsys: pytest.CaptureFixture[str],
) -> None:
    generic = _explain(["basic"], capsys)
    assert generic["(0008,1110)"]["action"] == "by IOD"
    assert "Type 3/absent X" in generic["(0008,1110)"]["why"]
    ct = _explain(["basic", "--sop-class", CT], capsys)
    assert (
        ct["(0008,1110)"]["action"] == "remove" and "Type 3 in ct-image" in ct["(0008,1110)"]["why"]
    )
    dose = _explain(["basic", "--sop-class", "rt-dose"], capsys)
    assert (
        dose["(0008,1070)"]["action"] == "empty"
        and "Type 2 in rt-dose" in dose["(0008,1070)"]["why"]
    )


def test_explained_branch_is_what_deidentify_does(capsys: pytest.CaptureFixture[str]) -> None:
    """Every compound-coded attribute of a scanner's CT: the output does what explain says."""
    explained = _explain(["basic", "--sop-class", CT], capsys)
    source = _scanner_ct()
    compound = {int(r.tag[1:5] + r.tag[6:10], 16): r for r in load_table().rows if "/" in r.basic}
    present = [tag for tag in compound if tag in source]
    out = _deid(source)
    assert len(present) >= 6
    for tag in present:
        action = explained[compound[tag].tag]["action"]
        if action == "remove":
            assert tag not in out, compound[tag].keyword
        elif action == "empty":
            assert tag in out and not out[tag].value, compound[tag].keyword
        else:
            assert tag in out and out[tag].value, compound[tag].keyword


# --------------------------------------------------------------------------- deidentify --validate
@needs_validator
def test_deidentify_validate_reports_less_conformant_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli.main import main

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm"):
        ds = pydicom.dcmread(TEST_FILES / name)
        add_scanner_phi(ds, Patient())
        ds.save_as(folder / name)
    out = tmp_path / "out"
    code = main(["deidentify", "--quiet", "--validate", "-i", str(folder), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0
    assert "  less conformant  0" in err
    written = {pydicom.dcmread(p).Modality: p for p in out.rglob("*.dcm")}
    assert sorted(written) == ["CT", "MR", "RTDOSE"]
    pairs = [(folder / "CT_small.dcm", written["CT"]), (folder / "MR_small.dcm", written["MR"])]
    assert conformance.count_less_conformant(pairs) == 0
    broken = pydicom.dcmread(written["CT"])
    broken.ReferencedStudySequence = Sequence()  # an empty Type 3 sequence: what issue 17 saw
    broken.save_as(written["CT"])
    assert conformance.count_less_conformant(pairs, jobs=2) == 1


def test_deidentify_validate_refuses_without_the_validator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.cli.main import main

    monkeypatch.setattr("shutil.which", lambda name: None)
    code = main(
        [
            "deidentify",
            "--validate",
            "-i",
            str(TEST_FILES / "CT_small.dcm"),
            "-o",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "dicom3tools" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before any work


def test_nested_pair_the_tables_do_not_define_keeps_the_unknown_class_choice() -> None:
    """ReferencedStudySequence inside a sequence whose macro has none: X/Z -> Z, as before."""
    ct = load_iod_table().for_sop_class(CT)
    assert ct is not None and ct.type_of(0x00081110, 0x00081115) is None  # undefined pair
    ds = _scanner_ct()
    odd = Dataset()
    odd.ReferencedStudySequence = Sequence([Dataset()])
    odd.ReferencedStudySequence[0].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    odd.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.1234.77"
    ds.ReferencedSeriesSequence = Sequence([odd])  # (0008,1115) has no Referenced Study inside
    out = _deid(ds)
    assert out.ReferencedSeriesSequence[0].ReferencedStudySequence == Sequence()
    assert "ReferencedStudySequence" not in out  # the top-level one: Type 3 in CT -> removed
