"""What the profile pages show, without HTTP: each destination's profile and whether it is
signed, a profile in plain language, a draft compiled with its problems, stored versions, and
the diff of any two profiles (a shipped one, a destination's file, a stored version)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from gateway.config import ServiceConfig
from gateway.errors import ConfigurationError
from gateway.persistence.db import Database
from gateway.persistence.profiles import (
    ProfileRecord,
    VersionSummary,
    get_version,
    list_versions,
    signed_hashes,
)
from gateway.profiles.compiler import CompiledProfile, Problem, ProfileInvalid, compile_text
from gateway.profiles.loader import available_profiles, read_profile

#: the plain-language groups, in the order the page shows them
GROUPS: tuple[tuple[str, str], ...] = (
    ("removed", "Removed"),
    ("emptied", "Emptied (kept, with no value)"),
    ("pseudonym", "Replaced by a pseudonym or a dummy value"),
    ("shifted", "Dates shifted"),
    ("cleaned", "Cleaned (identifying text taken out)"),
    ("kept", "Kept as they are"),
    ("other", "Decided otherwise"),
)

#: action text (as ``profile explain`` prints it) -> group; the first prefix that matches wins
ACTION_GROUPS: tuple[tuple[str, str], ...] = (
    ("remove", "removed"),
    ("empty", "emptied"),
    ("clean -> shift-date", "shifted"),
    ("dateshift", "shifted"),
    ("shift", "shifted"),
    ("clean -> keep", "kept"),
    ("keep", "kept"),
    ("uid", "pseudonym"),
    ("dummy", "pseudonym"),
    ("pseudonymise", "pseudonym"),
    ("patient-pseudonym", "pseudonym"),
    ("accession-pseudonym", "pseudonym"),
    ("clean", "cleaned"),
    ("redact", "cleaned"),
    ("presidio", "cleaned"),
)


def group_of(action: str) -> str:
    lowered = action.lower()
    return next((g for prefix, g in ACTION_GROUPS if lowered.startswith(prefix)), "other")


@dataclass(frozen=True)
class DestinationProfile:
    destination: str
    given: str  # as the configuration names it
    file: str
    name: str
    version: str
    content_hash: str
    signed: bool
    requires_signoff: bool
    error: str = ""


@dataclass
class Draft:
    """A profile text as compiled: its problems (by line) or the compiled profile."""

    text: str
    file: str
    compiled: CompiledProfile | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def lines(self) -> list[tuple[int, str, list[Problem]]]:
        """Each line of the text, numbered, with the problems found at it (this file's)."""
        at: dict[int, list[Problem]] = {}
        for problem in self.problems:
            if problem.line and problem.file == self.file:
                at.setdefault(problem.line, []).append(problem)
        return [(n, line, at.get(n, [])) for n, line in enumerate(self.text.splitlines(), 1)]


def destination_profiles(config: ServiceConfig, db: Database) -> list[DestinationProfile]:
    found: list[DestinationProfile] = []
    loaded: dict[str, CompiledProfile] = {}
    for name, dest in config.destinations.items():
        try:
            text, file = read_profile(dest.profile)
            compiled = loaded[name] = compile_text(text, file)
        except ConfigurationError as exc:
            found.append(
                DestinationProfile(
                    name,
                    dest.profile,
                    "",
                    "",
                    "",
                    "",
                    False,
                    config.requires_signoff(name),
                    exc.detail,
                )
            )
            continue
        profile = compiled.profile
        found.append(
            DestinationProfile(
                name,
                dest.profile,
                file,
                profile.name,
                profile.version,
                profile.content_hash,
                False,
                config.requires_signoff(name),
            )
        )
    signed = signed_hashes(db, [c.profile.content_hash for c in loaded.values()])
    return [DestinationProfile(**{**d.__dict__, "signed": d.content_hash in signed}) for d in found]


def compile_draft(text: str, file: str) -> Draft:
    """``file`` is where the text would live: a relative ``extends`` resolves beside it."""
    draft = Draft(text, file)
    try:
        draft.compiled = compile_text(text, file)
    except ProfileInvalid as exc:
        draft.problems = list(exc.problems)
    except ConfigurationError as exc:
        draft.problems = [Problem(file, None, "profile", exc.detail)]
    return draft


def plain_language(compiled: CompiledProfile) -> list[tuple[str, str, list[dict[str, str]]]]:
    """(group id, title, rows) for every DICOM attribute and FHIR rule the profile decides."""
    from gateway.profiles.explain_fhir import explain_fhir_rules

    rows: dict[str, list[dict[str, str]]] = {g: [] for g, _ in GROUPS}
    for row in compiled.dicom.rules.explain():
        rows[group_of(row["action"])].append({"standard": "DICOM", **row})
    for rule in explain_fhir_rules(compiled.profile):
        target = str(rule.get("path") or rule.get("type") or rule.get("target") or "")
        action = str(rule.get("method", ""))
        rows[group_of(action)].append(
            {
                "standard": "FHIR",
                "tag": target,
                "keyword": "",
                "action": action,
                "why": str(rule.get("why", "")),
                "from": str(rule.get("from", "")),
            }
        )
    return [(g, title, rows[g]) for g, title in GROUPS if rows[g]]


def versions_of(db: Database, profile: DestinationProfile) -> list[VersionSummary]:
    """Stored versions of this destination's profile (same file or same profile name)."""
    return [v for v in list_versions(db) if v.source_file == profile.file or v.name == profile.name]


def shipped() -> list[str]:
    return available_profiles()


def resolve(db: Database, config: ServiceConfig, ref: str) -> tuple[str, CompiledProfile]:
    """A profile named by the diff form: ``shipped:NAME``, ``file:DESTINATION`` (what that
    destination runs) or a stored version's hash. ConfigurationError when unknown."""
    kind, _, value = ref.partition(":")
    readers: Mapping[str, Any] = {
        "shipped": lambda v: read_profile(v) if v in available_profiles() else None,
        "file": lambda v: (
            read_profile(config.destinations[v].profile) if v in config.destinations else None
        ),
        "version": lambda v: _stored(db, v),
    }
    reader = readers.get(kind)
    found = reader(value) if reader else None
    if found is None:
        raise ConfigurationError(detail=f"no such profile to compare: {ref}")
    text, file = found
    label = {"shipped": f"shipped {value}", "file": f"{value}'s file", "version": f"#{value}"}
    return label[kind], compile_text(text, file)


def _stored(db: Database, content_hash: str) -> tuple[str, str] | None:
    record = get_version(db, content_hash)
    return (record.text, record.source_file) if record else None


def with_namespace(text: str, compiled: CompiledProfile, namespace: str, register: str) -> str:
    """The profile text with ``register`` (``dicom-issuer:NAME`` or ``fhir-system:URI``)
    declared in ``namespace``: the namespace's effective entry (inherited or own, created
    when new) with the register added, written into this file's list, where an entry of the
    same name replaces the parent's (``extends``). Comments of the file are not kept."""
    kind, _, value = register.partition(":")
    field_name = {"dicom-issuer": "dicom_issuers", "fhir-system": "fhir_systems"}.get(kind)
    if field_name is None or not value:
        raise ConfigurationError(detail=f"not a register the gateway reports: {register}")
    effective = {
        n.name: n.model_dump(mode="json") for n in compiled.profile.linkage.identity.namespaces
    }
    entry = effective.get(namespace, {"name": namespace, "dicom_issuers": [], "fhir_systems": []})
    if value not in entry[field_name]:
        entry[field_name] = [*entry[field_name], value]
    data = yaml.safe_load(text) or {}
    identity = data.setdefault("linkage", {}).setdefault("identity", {})
    listed = identity.get("namespaces")
    target = listed.setdefault("add", []) if isinstance(listed, dict) else listed
    if not isinstance(target, list):
        target = identity["namespaces"] = []
    names = [item.get("name") if isinstance(item, dict) else None for item in target]
    if namespace in names:
        target[names.index(namespace)] = entry
    else:
        target.append(entry)
    header = f"# namespace mapping added in the workbench: {register} -> {namespace}\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def record_of(draft: Draft) -> ProfileRecord:
    assert draft.compiled is not None
    return ProfileRecord.of(draft.compiled.profile, draft.text, draft.file)
