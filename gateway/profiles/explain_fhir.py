"""Rows for ``deid-gateway profile explain``: the FHIR rules in the order they are tried."""

from __future__ import annotations

from typing import Any

from gateway.profiles.fhir_model import FhirMethod, FhirRule
from gateway.profiles.model import DateMethod, Profile

BUILT_IN = "built-in"
INVARIANTS: tuple[tuple[str, str, str], ...] = (
    ("Patient.id", "pseudonymise (linkage)", "= the DICOM PatientID pseudonym of the same person"),
    ("Resource.id", "pseudonymise (linkage)", "keyed per resource type; references follow"),
    (
        "Reference.reference",
        "rewrite (linkage)",
        "relative, absolute, urn:uuid, urn:oid, conditional and #contained stay resolvable",
    ),
    ("Bundle.entry.fullUrl", "pseudonymise (linkage)", "urn:uuid stays a valid UUID"),
    ("Bundle.link, Bundle.signature", "redact", "search URLs and signatures carry the original"),
    ("Resource.meta.security", "label", "v3-ObservationValue PSEUDED/REDACTED/MASKED/ABSTRED"),
)


def _method_text(rule: FhirRule, profile: Profile) -> str:
    method = rule.method.value
    if rule.method is FhirMethod.PSEUDONYMISE and rule.as_.value != "auto":
        method += f" as {rule.as_.value}"
    if rule.method is FhirMethod.GENERALIZE and rule.granularity is not None:
        method += f" ({rule.granularity.value})"
    if rule.method is FhirMethod.PERTURB and rule.range is not None:
        method += f" (+/-{rule.range:g})"
    if rule.method is FhirMethod.SUBSTITUTE:
        method += f" -> {rule.value}"
    if rule.method is FhirMethod.DATE_SHIFT:
        if profile.linkage.dates.method is DateMethod.SHIFT:
            method += f" (+/-{profile.linkage.dates.range_days} d/patient)"
        else:
            method += " (year only)"
    return method


def explain_fhir_rules(profile: Profile) -> list[dict[str, Any]]:
    """One row per rule: ``path`` or ``type``, ``method``, ``why``, ``source``, ``from`` (the
    file of the profile's rule, ``built-in`` for the others).

    Order: linkage invariants (always applied), the profile's rules (first match wins), the
    built-in fail-closed defaults, then the catch-all (keep).
    """
    from gateway.fhir.rules import BUILTIN_RULES

    rows: list[dict[str, Any]] = [
        {"path": path, "type": "", "method": method, "why": why}
        | {"source": "invariant", "from": BUILT_IN}
        for path, method, why in INVARIANTS
    ]
    for source, rules in (("profile", profile.fhir.rules), ("built-in", BUILTIN_RULES)):
        for index, rule in enumerate(rules):
            where = profile.decided_by(("fhir", "rules", index)) if source == "profile" else None
            rows.append(
                {
                    "path": rule.path or "",
                    "type": rule.type or "",
                    "method": _method_text(rule, profile),
                    "why": rule.why,
                    "source": source,
                    "from": where or BUILT_IN,
                }
            )
    rows.append(
        {
            "path": "(anything else)",
            "type": "",
            "method": "keep",
            "why": "codes, values and units keep their clinical utility",
            "source": "default",
            "from": BUILT_IN,
        }
    )
    nlp = "Presidio + " if profile.fhir.free_text.nlp else ""
    rows.append(
        {
            "path": "(free text: clean)",
            "type": "",
            "method": f"{nlp}linked deny-list + patterns",
            "why": "spans become [ENTITY-token], consistent within a patient",
            "source": "free_text",
            "from": profile.decided_by(("fhir", "free_text", "nlp")),
        }
    )
    return rows
