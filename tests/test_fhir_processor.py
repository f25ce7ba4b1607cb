"""The FHIR stages (gateway.pipeline.fhir_stages.FhirProcessor): bad input ends in a
QuarantineError and nothing else, the flat output equals the batch's reference semantics
(Bundles flattened entry by entry, references literal), one processor serves many threads."""

from __future__ import annotations

import copy
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import QuarantineError, ReasonCode
from gateway.fhir.bundle import engine_for, index_bundle, with_entry_id
from gateway.fhir.references import ReferenceMode
from gateway.fhir.resolver import InMemoryPatientIndex
from gateway.fhir.state import MAX_ELEMENT_DEPTH
from gateway.linkage.context import Linkage
from gateway.pipeline.fhir_stages import (
    MAX_DEPTH,
    FhirProcessor,
    FhirValidationFailed,
    PatientReference,
)
from gateway.profiles.fhir_model import ValidationMode
from gateway.profiles.model import Profile
from tests.fhir_fixtures import (
    MRN_SYSTEM,
    linkage_for,
    profile_with,
    synthea_files,
    synthea_patient_bundles,
)

PROFILES = ["basic", "safe-harbor", "research"]


def _processor(name: str = "research", **changes: Any) -> FhirProcessor:
    profile = profile_with(name, free_text={"nlp": False}, **changes)
    return FhirProcessor(profile, linkage_for(profile))


def _patient(system: Any = MRN_SYSTEM, value: Any = "MRN-0042") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "pat-1",
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": "Quimby", "given": ["Ottilie"]}],
        "birthDate": "1961-04-02",
    }


def _observation(subject: str = "Patient/pat-1") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2020-03-04T10:00:00Z",
    }


def _bundle(*resources: dict[str, Any], kind: str = "collection") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"fullUrl": f"urn:uuid:{i:08d}-0000-4000-8000-000000000000", "resource": r}
                  for i, r in enumerate(resources)],
    }  # fmt: skip


# -- bad input: a QuarantineError, never another exception ----------------------------------------
BAD_IDENTIFIERS = [
    {"system": 5, "value": "MRN-0042"},  # the case: system is a number
    {"system": MRN_SYSTEM, "value": 12345678},  # an MRN written as a number
    {"system": ["x"], "value": "MRN-0042"},
    {"system": MRN_SYSTEM, "value": {"nested": "MRN-0042"}},
]


@pytest.mark.parametrize("name", PROFILES)
@pytest.mark.parametrize("identifier", BAD_IDENTIFIERS, ids=["system-int", "value-int", "system-list", "value-dict"])  # fmt: skip
def test_bad_identifier_is_quarantined(name: str, identifier: dict[str, Any]) -> None:
    processor = _processor(name)
    patient = {**_patient(), "identifier": [identifier]}
    index = InMemoryPatientIndex(processor.linkage.identity)
    index.register_patient(patient)  # the CLI's first pass must not fail on it either
    for payload in (patient, _bundle(patient, _observation())):
        with pytest.raises(QuarantineError) as caught:
            processor.process(copy.deepcopy(payload), index)
        assert caught.value.reason is ReasonCode.FHIR_INVALID
        assert "MRN-0042" not in str(caught.value) and "12345678" not in str(caught.value)
        assert caught.value.ref in ("Patient.identifier.system", "Patient.identifier.value")


def test_unexpected_engine_failure_becomes_a_value_free_quarantine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processor = _processor()

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("Ottilie Quimby")  # a library error that quotes a value

    monkeypatch.setattr(processor.engine, "resource", broken)
    with pytest.raises(QuarantineError) as caught:
        processor.process(_patient(), None)
    assert caught.value.reason is ReasonCode.FHIR_INVALID
    assert "KeyError" in caught.value.detail and "Quimby" not in str(caught.value)


# -- parse ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x01 not json", ReasonCode.NOT_FHIR),
        (b'{"resourceType": "Patient"', ReasonCode.NOT_FHIR),  # truncated
        (b"[1, 2]", ReasonCode.NOT_FHIR),
        (b'{"id": "x"}', ReasonCode.NOT_FHIR),
        (b'{"resourceType": 7}', ReasonCode.NOT_FHIR),
        (b"\xff\xfe{}", ReasonCode.NOT_FHIR),
    ],
)
def test_parse_refuses_what_is_not_fhir(data: bytes, reason: ReasonCode) -> None:
    with pytest.raises(QuarantineError) as caught:
        _processor().parse(data)
    assert caught.value.reason is reason


def test_parse_reads_a_resource() -> None:
    assert _processor().parse(json.dumps(_patient()).encode()) == _patient()


def _nested_extensions(levels: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(levels):
        extension = {"url": "http://example.org/level", "extension": [extension]}
    return {**_patient(), "extension": [extension]}


@pytest.mark.parametrize("levels", [5000, MAX_ELEMENT_DEPTH])
def test_deep_nesting_is_quarantined_not_a_recursion_error(levels: int) -> None:
    processor = _processor()
    with pytest.raises(QuarantineError) as caught:
        processor.process(_nested_extensions(levels), None)
    assert caught.value.reason is ReasonCode.FHIR_INVALID
    assert caught.value.ref == "Patient.extension"


@pytest.mark.parametrize("levels", [5000, MAX_DEPTH])
def test_deep_json_is_refused_by_parse_or_process(levels: int) -> None:
    processor = _processor()
    data = b'{"resourceType":"Patient","extension":' + b'[{"url":"u","extension":' * levels
    data += b"[]" + b"}]" * levels + b"}"
    with pytest.raises(QuarantineError) as caught:
        processor.process(processor.parse(data), None)
    assert caught.value.reason is ReasonCode.FHIR_INVALID


def test_deeply_nested_bundles_are_quarantined() -> None:
    bundle = _bundle(_patient())
    for _ in range(5000):
        bundle = _bundle(bundle)
    with pytest.raises(QuarantineError) as caught:
        _processor().process(bundle, None)
    assert caught.value.reason is ReasonCode.FHIR_INVALID


def test_ordinary_nesting_passes() -> None:
    out = _processor().process(_nested_extensions(20), None)
    assert len(out.resources) == 1


# -- resolve patient -----------------------------------------------------------------------------
def test_patients_of_nested_bundles() -> None:
    inner = _bundle({**_patient(), "id": "pat-2"})
    outer = _bundle(_patient(), _observation(), inner)
    assert [p["id"] for p in _processor().patients(outer)] == ["pat-1", "pat-2"]


def test_unresolved_against_an_in_memory_index() -> None:
    processor = _processor()
    index = InMemoryPatientIndex(processor.linkage.identity)
    conditional = _observation(f"Patient?identifier={MRN_SYSTEM}|MRN-0042")
    # an identifier in no declared namespace: only a registered Patient resolves it
    unknown = _observation("Patient?identifier=http://other.example|Z9")
    assert processor.unresolved(_observation(), index) == [PatientReference("pat-1")]
    assert processor.unresolved(unknown, index) == [
        PatientReference(None, (("http://other.example", "Z9"),))
    ]
    assert processor.unresolved(_bundle(_patient(), _observation()), index) == []
    assert processor.unresolved(conditional, index) == []  # a declared MRN system links
    index.register_patient(_patient())
    assert processor.unresolved(_observation(), index) == []


# -- de-identify: flat output --------------------------------------------------------------------
def test_transaction_bundle_becomes_literal_references_without_a_run_index() -> None:
    processor = _processor()
    patient = {k: v for k, v in _patient().items() if k != "id"}  # a POST: no id, a urn:uuid
    bundle = _bundle(patient, _observation("urn:uuid:00000000-0000-4000-8000-000000000000"),
                     kind="transaction")  # fmt: skip
    out = processor.process(bundle, None)
    by_type = {r["resourceType"]: r for r in out.resources}
    assert set(by_type) == {"Patient", "Observation"}
    assert by_type["Observation"]["subject"]["reference"] == f"Patient/{by_type['Patient']['id']}"
    assert "urn:uuid" not in json.dumps(out.resources)


def _reference_output(
    paths: list[Path], profile: Profile, linkage: Linkage
) -> list[list[dict[str, Any]]]:
    """What the CLI batch delivered before the FhirProcessor (gateway/fhir/batch.py `_Run`):
    one run index of every Patient and fullUrl, one mapper for the run, each Bundle entry
    de-identified alone in FLAT mode (nested Bundles flattened), output validated."""
    engine = engine_for(profile, linkage)
    index = InMemoryPatientIndex(linkage.identity)
    objects = [json.loads(p.read_bytes()) for p in paths]
    for obj in objects:
        index_bundle(obj, index)
    mapper = engine.mapper(index)

    def flat(obj: dict[str, Any]) -> list[dict[str, Any]]:
        if obj["resourceType"] == "Bundle":
            return [r for e in obj.get("entry") or [] for r in flat(with_entry_id(e))]
        return [engine.resource(obj, mapper, ReferenceMode.FLAT).resource]

    return [flat(obj) for obj in objects]


@pytest.mark.parametrize("name", ["research", "basic"])
def test_synthea_transaction_bundles_as_the_batch_delivered_them(name: str) -> None:
    profile = profile_with(name, free_text={"nlp": False})
    linkage = linkage_for(profile)
    paths = synthea_files()
    processor = FhirProcessor(profile, linkage)
    index = InMemoryPatientIndex(linkage.identity)
    objects = [processor.parse(p.read_bytes()) for p in paths]
    for obj in objects:
        index_bundle(obj, index)
    expected = _reference_output(paths, profile, linkage)
    for obj, want in zip(objects, expected, strict=True):
        got = processor.process(obj, index)
        assert json.dumps(got.resources) == json.dumps(want)  # same resources, same bytes
    assert sum(len(w) for w in expected) == sum(len(o["entry"]) for o in objects)


def test_four_threads_on_one_processor_give_what_one_thread_gives() -> None:
    """No run index: each call knows only its own Bundle's Patients and fullUrls, so state
    leaking from one call into another would change dates, ids or references."""
    processor = _processor("research")
    objects = [processor.parse(p.read_bytes()) for p in synthea_patient_bundles()]

    def run(obj: dict[str, Any]) -> str:
        out = processor.process(obj, None)
        return json.dumps([out.resources, sorted(out.spans.items()), out.version.value])

    one = [run(obj) for obj in objects]
    assert len(set(one)) == len(objects)
    with ThreadPoolExecutor(max_workers=4) as pool:
        many = list(pool.map(run, objects * 2))  # every bundle twice, interleaved
    assert many == one * 2
    assert not [v for v in vars(processor.engine).values() if isinstance(v, threading.local)]


# -- validate ------------------------------------------------------------------------------------
def test_output_that_does_not_validate_carries_its_operation_outcome() -> None:
    invalid = {k: v for k, v in _observation().items() if k != "status"}  # status is required
    processor = _processor("research", validation=ValidationMode.OUTPUT)
    with pytest.raises(FhirValidationFailed) as caught:
        processor.process(invalid, None)
    assert caught.value.reason is ReasonCode.FHIR_INVALID
    assert caught.value.outcome["resourceType"] == "OperationOutcome"
    assert any("status" in e for i in caught.value.outcome["issue"] for e in i.get("expression", []))  # fmt: skip
    unchecked = _processor("research", validation=ValidationMode.NONE)
    assert len(unchecked.process(invalid, None).resources) == 1


# -- provenance ----------------------------------------------------------------------------------
def test_provenance_targets_the_patients() -> None:
    processor = _processor()
    out = processor.process(_bundle(_patient(), _observation()), None)
    ids = [r["id"] for r in out.resources if r["resourceType"] == "Patient"]
    prov = processor.provenance(ids)
    assert prov["resourceType"] == "Provenance"
    assert prov["target"] == [{"reference": f"Patient/{ids[0]}"}]
    assert processor.profile.content_hash in prov["policy"][0]


def test_unresolved_against_the_identity_index(tmp_path: Path) -> None:
    """The service's persistent index is a PatientResolver too: same answers."""
    from gateway.persistence.db import Database
    from gateway.persistence.identity import IdentityIndex

    processor = _processor()
    database = Database(f"sqlite:///{tmp_path / 'gateway.db'}")
    database.create_all()
    index = IdentityIndex(database, "default", processor.linkage)
    assert processor.unresolved(_observation(), index) == [PatientReference("pat-1")]
    index.learn_patient(_patient())
    assert processor.unresolved(_observation(), index) == []
    out = processor.process(_observation(), index)
    person = index.person_by_id("pat-1")
    assert person is not None
    patient_id = processor.linkage.person(person).patient_id
    assert out.resources[0]["subject"]["reference"] == f"Patient/{patient_id}"
