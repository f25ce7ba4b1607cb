"""The cohort file: who is in the export. CSV with a header naming any of ``mrn``, ``issuer``,
``accession``, ``study_uid`` (one entry per row), or a FHIR Group whose members name a Patient
by identifier or by reference.

Entries are known by their row number only: an MRN is never put in an error, a log, a
progress line or a report. Errors name the file and the row, never a value.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass

from gateway.errors import ReasonCode, UsageError

COLUMNS = ("mrn", "issuer", "accession", "study_uid")
KEYS = ("mrn", "accession", "study_uid")  # a row needs at least one of them


class CohortInvalid(UsageError):
    default_reason = ReasonCode.COHORT_INVALID


@dataclass(frozen=True)
class CohortEntry:
    """One approved patient or study. ``issuer`` is the DICOM IssuerOfPatientID; ``system``
    the FHIR identifier system (from a Group); ``patient_ref`` a Group's ``Patient/<id>``."""

    row: int
    mrn: str | None = None
    issuer: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    system: str | None = None
    patient_ref: str | None = None

    @property
    def has_dicom_key(self) -> bool:
        return bool(self.mrn or self.accession or self.study_uid)


@dataclass(frozen=True)
class Cohort:
    entries: tuple[CohortEntry, ...]
    digest: str  # sha256 of the file's bytes: the same file resumes the same export


def parse_cohort(data: bytes, name: str = "cohort") -> Cohort:
    """CSV or (JSON that starts with ``{``) a FHIR Group; :class:`CohortInvalid` naming
    ``name`` and the row otherwise."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CohortInvalid(detail=f"{name}: not UTF-8 text") from None
    parse = _group if text.lstrip().startswith("{") else _csv
    entries = parse(text, name)
    if not entries:
        raise CohortInvalid(detail=f"{name}: no entries")
    return Cohort(tuple(entries), digest)


def _csv(text: str, name: str) -> list[CohortEntry]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise CohortInvalid(detail=f"{name}: empty file")
    columns = [h.strip().lower() for h in header]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown or not any(c in KEYS for c in columns):
        # a header cell that is no column name may be a value (a file without header): no echo
        raise CohortInvalid(
            detail=f"{name}: line 1 must be a header naming any of {', '.join(COLUMNS)} "
            f"(with at least one of {', '.join(KEYS)})"
        )
    if len(set(columns)) != len(columns):
        raise CohortInvalid(detail=f"{name}: a column is named twice in the header")
    entries = []
    for row, cells in enumerate(reader, start=1):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(columns):
            raise CohortInvalid(
                detail=f"{name}: row {row} has {len(cells)} cells, the header {len(columns)}"
            )
        values = {c: (v.strip() or None) for c, v in zip(columns, cells, strict=True)}
        entry = CohortEntry(row=row, **values)
        if not entry.has_dicom_key:
            raise CohortInvalid(detail=f"{name}: row {row} has no {', '.join(KEYS)}")
        entries.append(entry)
    return entries


def _group(text: str, name: str) -> list[CohortEntry]:
    try:
        group = json.loads(text)
    except json.JSONDecodeError:
        raise CohortInvalid(detail=f"{name}: not valid JSON") from None
    if not isinstance(group, dict) or group.get("resourceType") != "Group":
        raise CohortInvalid(detail=f"{name}: a JSON cohort must be a FHIR Group resource")
    members = group.get("member") or []
    if not isinstance(members, list):
        raise CohortInvalid(detail=f"{name}: Group.member must be a list")
    entries = []
    for row, member in enumerate(members, start=1):
        entity = member.get("entity") if isinstance(member, dict) else None
        if not isinstance(entity, dict):
            raise CohortInvalid(detail=f"{name}: Group.member {row} has no entity")
        if member.get("inactive") is True:
            continue
        identifier = entity.get("identifier") or {}
        reference = entity.get("reference")
        mrn = identifier.get("value") if isinstance(identifier, dict) else None
        system = identifier.get("system") if isinstance(identifier, dict) else None
        ref = reference if isinstance(reference, str) and reference.startswith("Patient/") else None
        if not (isinstance(mrn, str) and mrn) and ref is None:
            raise CohortInvalid(
                detail=f"{name}: Group.member {row} names no Patient identifier or reference"
            )
        entries.append(CohortEntry(row=row, mrn=mrn or None, system=system, patient_ref=ref))
    return entries
