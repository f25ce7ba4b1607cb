"""``profile explain`` rows for FHIR, and the profiles' coverage of the Safe Harbor identifiers."""

from __future__ import annotations

import pytest

from gateway.profiles import load_profile
from gateway.profiles.explain_fhir import explain_fhir_rules


@pytest.mark.parametrize("name", ["research", "safe-harbor", "basic"])
def test_rows_are_complete_and_ordered(name: str) -> None:
    profile = load_profile(name)
    rows = explain_fhir_rules(profile)
    assert all({"path", "type", "method", "why", "source"} <= set(r) for r in rows)
    assert all(r["path"] or r["type"] for r in rows)
    sources = [r["source"] for r in rows]
    assert sources.index("invariant") < sources.index("profile") < sources.index("built-in")
    assert len([r for r in rows if r["source"] == "profile"]) == len(profile.fhir.rules)


@pytest.mark.parametrize("name", ["research", "safe-harbor"])
def test_safe_harbor_identifier_types_are_covered(name: str) -> None:
    rows = [r for r in explain_fhir_rules(load_profile(name)) if r["source"] == "profile"]
    by_type = {r["type"]: r["method"] for r in rows if r["type"]}
    assert by_type["HumanName"] == "redact"  # A names
    assert by_type["Address"].startswith("generalize")  # B geography
    assert by_type["ContactPoint"] == "redact"  # D-F, N
    assert by_type["Identifier"].startswith("pseudonymise")  # H-R
    assert by_type["date"].startswith("dateShift")  # C dates
    assert by_type["Attachment"] == "clean" and by_type["Narrative"] == "clean"
    paths = " ".join(r["path"] for r in rows)
    for fragment in ("Patient.photo", "Device.serialNumber", "'SS'", "Coverage.subscriberId"):
        assert fragment in paths


def test_date_method_is_explained() -> None:
    research = {r["type"]: r["method"] for r in explain_fhir_rules(load_profile("research"))}
    harbor = {r["type"]: r["method"] for r in explain_fhir_rules(load_profile("safe-harbor"))}
    assert "d/patient" in research["dateTime"]
    assert "year only" in harbor["dateTime"]
