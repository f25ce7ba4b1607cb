"""``deid-gateway profile diff OLD NEW``: every effective action that differs, old -> new.

A privacy officer signs off a change of profile (a new site profile, a new version of a shipped
one) by what it changes, not by its YAML: the compiled DICOM table (by tag, with the reason
each side gives), the FHIR rules (by target: path or ``type X``) and every other setting
(linkage, pixels, free text...), both sides with ``extends`` resolved. Data only; the CLI
formats it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from gateway.profiles.compiler import CompiledProfile
from gateway.profiles.extends import MERGES
from gateway.profiles.problems import Loc, where_text

# compared by their own rows (DICOM table, FHIR rules), not as settings
RULE_LISTS: frozenset[Loc] = frozenset({("dicom", "overrides"), ("fhir", "rules")})


@dataclass(frozen=True)
class Difference:
    """One effective action or setting that is not the same; ``None``: absent on that side."""

    kind: str  # DICOM | FHIR | setting
    key: str  # tag, FHIR target, setting path
    name: str  # DICOM keyword; "" otherwise
    old: str | None
    new: str | None
    old_why: str = ""
    new_why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def diff_profiles(old: CompiledProfile, new: CompiledProfile) -> list[Difference]:
    """DICOM attributes first (table order), then FHIR rules, then settings."""
    return _dicom(old, new) + _fhir(old, new) + _settings(old, new)


def _changed(kind: str, old: dict[str, dict[str, str]], new: dict[str, dict[str, str]],
             name_key: str) -> list[Difference]:  # fmt: skip
    """Rows by key (old order, then what only ``new`` has) whose action is not the same."""
    out = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        if a is not None and b is not None and _same(a, b):
            continue
        name = (a or b or {}).get(name_key, "")
        out.append(
            Difference(
                kind,
                key,
                name,
                a["action"] if a else None,
                b["action"] if b else None,
                a["why"] if a else "",
                b["why"] if b else "",
            )
        )
    return out


def _same(a: dict[str, str], b: dict[str, str]) -> bool:
    """Same action; a compound code (``by IOD``) is the same when its policy (the why) is."""
    return a["action"] == b["action"] and (a["action"] != "by IOD" or a["why"] == b["why"])


def _dicom(old: CompiledProfile, new: CompiledProfile) -> list[Difference]:
    def rows(compiled: CompiledProfile) -> dict[str, dict[str, str]]:
        return {row["tag"]: row for row in compiled.dicom.rules.explain()}

    return _changed("DICOM", rows(old), rows(new), "keyword")


def _fhir(old: CompiledProfile, new: CompiledProfile) -> list[Difference]:
    from gateway.profiles.explain_fhir import explain_fhir_rules

    def rows(compiled: CompiledProfile) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for row in explain_fhir_rules(compiled.profile):
            if row["source"] == "profile":
                target = row["path"] or f"type {row['type']}"
                found.setdefault(target, {"action": row["method"], "why": row["why"]})
        return found  # a target's first rule: a later one with the same target never matches

    return _changed("FHIR", rows(old), rows(new), "")


def _settings(old: CompiledProfile, new: CompiledProfile) -> list[Difference]:
    a = flatten(old.profile.model_dump(mode="json", by_alias=True))
    b = flatten(new.profile.model_dump(mode="json", by_alias=True))
    keys = [*a, *(k for k in b if k not in a)]
    return [Difference("setting", k, "", a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]


def flatten(data: Any, loc: Loc = ()) -> dict[str, str]:
    """Setting path -> value text. Lists of names are sets (their order decides nothing);
    lists of entries (namespaces, regions...) are keyed as ``extends`` keys them."""
    if loc in RULE_LISTS:
        return {}
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, loc + (key,)))
        return out
    if isinstance(data, list) and all(isinstance(item, dict) for item in data) and data:
        how = MERGES.get(loc)
        out = {}
        for index, item in enumerate(data):
            label = how.key(item) if how else index
            out[f"{where_text(loc)}[{label}]"] = json.dumps(item, sort_keys=True)
        return out
    if isinstance(data, list):
        return {where_text(loc): ", ".join(sorted(str(item) for item in data))}
    return {where_text(loc): data if isinstance(data, str) else json.dumps(data)}
