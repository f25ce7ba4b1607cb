"""Per-method and per-rule behaviour of the FHIR rule engine, on small real resources."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gateway.errors import ConfigurationError, QuarantineError, ReasonCode
from gateway.fhir.bundle import deidentify_fhir, deidentify_fhir_with_report
from gateway.fhir.values import Encryptor
from gateway.profiles.fhir_model import FhirRule
from gateway.profiles.loader import ProfileInvalid, parse_profile
from gateway.profiles.model import Profile
from tests.fhir_fixtures import MRN_SYSTEM, linkage_for, profile_with


def _profile(*rules: dict[str, Any], base: str = "research") -> Profile:
    """The base profile with ``rules`` tried before its own."""
    profile = profile_with(base, free_text={"nlp": False})
    extra = [FhirRule.model_validate(r) for r in rules]
    fhir = profile.fhir.model_copy(update={"rules": extra + list(profile.fhir.rules)})
    return profile.model_copy(update={"fhir": fhir})


def _patient(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": MRN_SYSTEM, "value": "MRN-1"}],
        "name": [{"family": "Zebulonski", "given": ["Ottoline"]}],
        "telecom": [{"system": "phone", "value": "555-201-3344"}],
        "address": [{"line": ["9 Quarry Rd"], "city": "Lowell", "state": "MA", "postalCode": "01852"}],
        "birthDate": "1931-05-06",
        "gender": "female",
        **extra,
    }  # fmt: skip


def _observation(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2020-02-29T10:00:00Z",
        "valueQuantity": {"value": 170.5, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"},
        **extra,
    }  # fmt: skip


def _run(obj: dict[str, Any], profile: Profile) -> dict[str, Any]:
    return deidentify_fhir(obj, profile, linkage_for(profile))


# -- methods -------------------------------------------------------------------------------------
def test_keep_keeps_and_first_match_wins() -> None:
    profile = _profile({"path": "Patient.gender", "method": "keep"},
                       {"path": "Patient.gender", "method": "redact"})  # fmt: skip
    assert _run(_patient(), profile)["gender"] == "female"
    profile = _profile({"path": "Patient.gender", "method": "redact"},
                       {"path": "Patient.gender", "method": "keep"})  # fmt: skip
    assert "gender" not in _run(_patient(), profile)


def test_redact_removes_and_labels() -> None:
    out = _run(_patient(), _profile())
    assert "name" not in out and "telecom" not in out
    assert {"REDACTED", "PSEUDED"} <= {s["code"] for s in out["meta"]["security"]}


def test_input_is_not_mutated() -> None:
    patient = _patient()
    before = repr(patient)
    _run(patient, _profile())
    assert repr(patient) == before


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("uid", lambda v, p: v == p.uid("abc")),
        ("uuid", lambda v, p: v == p.uuid("abc")),
        ("accession", lambda v, p: v == p.accession("abc")),
        ("token", lambda v, p: len(v) == 16 and v != "abc"),
    ],
)
def test_pseudonymise_kinds(kind: str, check: Any) -> None:
    profile = _profile({"path": "Observation.valueString", "method": "pseudonymise", "as": kind})
    obs = _observation()
    del obs["valueQuantity"]
    obs["valueString"] = "abc"
    out = _run(obs, profile)
    assert check(out["valueString"], linkage_for(profile).pseudonymizer)


def test_date_shift_uses_the_patients_offset() -> None:
    profile = _profile()
    linkage = linkage_for(profile)
    offset = linkage.person(linkage.identity.from_fhir(MRN_SYSTEM, "MRN-1")).date_offset_days  # type: ignore[arg-type]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": _observation()}, {"resource": _patient()}]}  # fmt: skip
    out = _run(bundle, profile)
    obs = out["entry"][0]["resource"]
    import datetime as dt

    shifted = dt.date.fromisoformat(obs["effectiveDateTime"][:10])
    assert (shifted - dt.date(2020, 2, 29)).days == offset
    assert obs["effectiveDateTime"].endswith("T10:00:00Z")


def test_substitute() -> None:
    profile = _profile({"path": "Patient.gender", "method": "substitute", "value": "unknown"})
    assert _run(_patient(), profile)["gender"] == "unknown"


@pytest.mark.parametrize(
    ("granularity", "expected"),
    [("state", {"state": "MA"}), ("zip3", {"state": "MA", "postalCode": "018"})],
)
def test_generalize_address(granularity: str, expected: dict[str, str]) -> None:
    profile = _profile({"type": "Address", "method": "generalize", "granularity": granularity})
    assert _run(_patient(), profile)["address"] == [expected]


def test_generalize_restricted_zip3_and_age_cap() -> None:
    profile = _profile({"type": "Address", "method": "generalize", "granularity": "zip3"},
                       {"path": "Patient.birthDate", "method": "generalize", "granularity": "age-cap"})  # fmt: skip
    patient = _patient(address=[{"state": "VT", "postalCode": "05901"}])
    out = _run(patient, profile)
    assert out["address"] == [{"state": "VT", "postalCode": "000"}]
    import datetime as dt

    assert int(out["birthDate"]) == dt.date.today().year - 90  # born 1931: over 89


def test_perturb_is_keyed_and_bounded() -> None:
    profile = _profile({"path": "Observation.valueQuantity", "method": "perturb", "range": 0.1})
    value = _run(_observation(), profile)["valueQuantity"]["value"]
    assert value != 170.5 and abs(value - 170.5) <= 17.05
    assert _run(_observation(), profile)["valueQuantity"]["value"] == value


def test_encrypt_round_trips() -> None:
    profile = _profile({"path": "Observation.valueString", "method": "encrypt"})
    obs = _observation()
    del obs["valueQuantity"]
    obs["valueString"] = "secret text"
    out = _run(obs, profile)
    assert out["valueString"].startswith("enc:v1:")
    assert Encryptor(linkage_for(profile)).decrypt(out["valueString"]) == "secret text"


def test_method_not_applicable_fails_closed() -> None:
    profile = _profile({"path": "Observation.status", "method": "dateShift"})
    with pytest.raises(QuarantineError):  # status is required: removing it cannot validate
        from gateway.fhir.validation import validate_output
        from gateway.profiles.fhir_model import FhirVersion

        validate_output(_run(_observation(), profile), FhirVersion.R4)


def test_clean_replaces_consistently_within_a_patient() -> None:
    profile = _profile()
    text = "Ottoline Zebulonski seen. Zebulonski, Ottoline agrees. Call 555-201-3344."
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": _patient()},
        {"resource": _observation(note=[{"text": text}])},
        {"resource": _observation(id="o2", note=[{"text": "Ottoline Zebulonski again"}])},
    ]}  # fmt: skip
    out, spans = deidentify_fhir_with_report(bundle, profile, linkage_for(profile))
    first = out["entry"][1]["resource"]["note"][0]["text"]
    second = out["entry"][2]["resource"]["note"][0]["text"]
    assert "Zebulonski" not in first + second and "555-201" not in first
    tag = first.split(" seen")[0]
    assert tag.startswith("[PERSON-") and second.startswith(tag)
    assert spans["PERSON"] >= 3


def test_text_attachment_cleaned_other_types_removed() -> None:
    note = base64.b64encode(b"Ottoline Zebulonski, MRN-1").decode()
    report = {
        "resourceType": "DiagnosticReport", "id": "d1", "status": "final",
        "code": {"text": "note"}, "subject": {"reference": "Patient/p1"},
        "presentedForm": [{"contentType": "text/plain", "data": note, "url": "http://pacs/x"},
                          {"contentType": "image/png", "data": "iVBORw0KGgo="}],
    }  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": _patient()}, {"resource": report}]}  # fmt: skip
    out = _run(bundle, _profile())["entry"][1]["resource"]["presentedForm"]
    text = base64.b64decode(out[0]["data"]).decode()
    assert "Zebulonski" not in text and "MRN-1" not in text and "url" not in out[0]
    assert out[1] == {"contentType": "image/png"}


# -- rule matching -------------------------------------------------------------------------------
def test_where_filter_and_type_rules() -> None:
    profile = _profile(
        {"path": "Patient.identifier.where(system = 'http://other')", "method": "redact"}
    )
    patient = _patient(identifier=[{"system": MRN_SYSTEM, "value": "MRN-1"},
                                   {"system": "http://other", "value": "X1"}])  # fmt: skip
    out = _run(patient, profile)
    assert [i["system"] for i in out["identifier"]] == [MRN_SYSTEM]


def test_codes_are_kept() -> None:
    out = _run(_observation(), _profile())
    assert out["code"] == _observation()["code"]
    assert out["valueQuantity"] == _observation()["valueQuantity"]


@pytest.mark.parametrize(
    "rule",
    [
        {"path": "Patient.name", "method": "substitute"},  # no value
        {"path": "Patient.name", "type": "HumanName", "method": "redact"},  # both
        {"method": "redact"},  # neither
        {"path": "Patient.birthDate", "method": "generalize"},  # no granularity
        {"path": "Patient.name", "method": "obliterate"},  # unknown method
        {"path": "Patient.name", "method": "redact", "colour": "red"},  # typo
    ],
)
def test_bad_rules_are_refused(rule: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FhirRule.model_validate(rule)


def test_bad_rule_in_yaml_names_file_and_line() -> None:
    text = "name: t\nversion: '1'\nfhir:\n  rules:\n    - path: Patient.name\n      methd: redact\n"
    with pytest.raises(ProfileInvalid) as info:
        parse_profile(text, "t.yaml")
    assert any(p.line == 5 or p.line == 6 for p in info.value.problems)


@pytest.mark.parametrize("path", ["Patient.name.where(", "Nonsense.name", "Patient.name.first()"])
def test_unusable_paths_refuse_to_start(path: str) -> None:
    from gateway.fhir.engine import FhirDeidentifier

    profile = _profile({"path": path, "method": "redact"})
    with pytest.raises(ConfigurationError) as info:
        FhirDeidentifier(profile, linkage_for(profile))
    assert info.value.reason is ReasonCode.PROFILE_INVALID


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        ({"resourceType": "Nonsense", "id": "x"}, ReasonCode.FHIR_INVALID),
        ({"id": "x"}, ReasonCode.FHIR_INVALID),
        (_observation(colour="blue"), ReasonCode.FHIR_INVALID),
        (_observation(effectiveDateTime="last tuesday"), ReasonCode.FHIR_INVALID),
        (_observation(code=["not", "an", "object"]), ReasonCode.FHIR_INVALID),
        (_observation(status={"name": "John"}), ReasonCode.FHIR_INVALID),
        (_observation(code={"resourceType": "John", "text": "x"}), ReasonCode.FHIR_INVALID),
    ],
)
def test_invalid_input_is_quarantined_without_values(
    resource: dict[str, Any], reason: ReasonCode
) -> None:
    with pytest.raises(QuarantineError) as info:
        _run(resource, _profile())
    assert info.value.reason is reason
    assert "blue" not in str(info.value) and "tuesday" not in str(info.value)


def test_one_engine_serves_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    profile = _profile()
    linkage = linkage_for(profile)

    def one(i: int) -> tuple[str, str]:
        patient = _patient(id=f"p{i}", identifier=[{"system": MRN_SYSTEM, "value": f"MRN-{i}"}])
        bundle = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": patient}, {"resource": _observation(subject={"reference": f"Patient/p{i}"})}]}  # fmt: skip
        out = deidentify_fhir(bundle, profile, linkage)
        return out["entry"][0]["resource"]["id"], out["entry"][1]["resource"]["subject"][
            "reference"
        ]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(64)))
    for i, (pid, ref) in enumerate(results):
        expected = linkage.person(linkage.identity.from_dicom(f"MRN-{i}", None)).patient_id
        assert pid == expected and ref == f"Patient/{expected}"


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        ({"value": 93, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"},
         {"value": 90, "comparator": ">="}),
        ({"value": 47, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"},
         {"value": 47}),
    ],
)  # fmt: skip
def test_safe_harbor_caps_ages(age: dict[str, Any], expected: dict[str, Any]) -> None:
    profile = profile_with("safe-harbor", free_text={"nlp": False})
    condition = {
        "resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
        "code": {"text": "x"}, "onsetAge": age,
    }  # fmt: skip
    out = _run(condition, profile)["onsetAge"]
    assert {k: out.get(k) for k in expected} == expected
