"""Which patient a FHIR payload speaks of, and whether the identity index knows them yet.

A resource whose patient is unknown is neither guessed nor forwarded: it waits (pending) until
the Patient arrives, or goes to quarantine when its time runs out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from gateway.persistence.identity import IdentityIndex

_RELATIVE = re.compile(r"^Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")
_ABSOLUTE = re.compile(r"^https?://.+/Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")
_CONDITIONAL = re.compile(r"^Patient\?(.+)$")


@dataclass(frozen=True)
class Unresolved:
    id_hash: str
    logical_id: str | None  # for a source-server lookup; never logged or stored


def patients_in(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj.get("resourceType") == "Patient":
        return [obj]
    if obj.get("resourceType") == "Bundle":
        return [e["resource"] for e in obj.get("entry") or []
                if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                and e["resource"].get("resourceType") == "Patient"]
    return []


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def unresolved_patients(obj: dict[str, Any], index: IdentityIndex) -> list[Unresolved]:
    """Patient references in ``obj`` that neither the payload nor the index can resolve."""
    local_ids = {str(p.get("id")) for p in patients_in(obj) if p.get("id")}
    missing: dict[str, Unresolved] = {}
    for reference in _references(obj):
        match = _RELATIVE.match(reference) or _ABSOLUTE.match(reference)
        if match:
            logical_id = match.group(1)
            if logical_id in local_ids or index.person_by_id(logical_id) is not None:
                continue
            h = index.patient_id_hash(logical_id)
            missing.setdefault(h, Unresolved(h, logical_id))
            continue
        match = _CONDITIONAL.match(reference)
        if match:
            resolved = False
            first_hash = None
            for name, value in parse_qsl(match.group(1)):
                if name != "identifier" or "|" not in value:
                    continue
                system, _, ident = value.partition("|")
                first_hash = first_hash or index.identifier_hash(system, ident)
                if index.person_by_identifier(system, ident) is not None:
                    resolved = True
                    break
            if not resolved and first_hash:
                missing.setdefault(first_hash, Unresolved(first_hash, None))
    return list(missing.values())
