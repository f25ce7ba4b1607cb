"""Keyed, deterministic pseudonyms: the one place both standards get their replacement values.

Every value is ``HMAC-SHA256(key, domain || original)``. The domain separates kinds (a UID and a
patient id that happen to be the same string get unrelated pseudonyms); the key makes the mapping
irreversible and unguessable without it (an unkeyed hash of an MRN is reversed by enumeration).
Nothing is stored here: the same input and key give the same output in every process, forever
(the honest broker's vault records what was issued, through :mod:`gateway.linkage.issued`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass

from gateway.linkage.issued import IssuedKind, note
from gateway.linkage.keys import PseudonymKey

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MAX_UID_LENGTH = 64
SH_MAX = 16


RESOLVED_NAMESPACE = "person-key"
"""A PersonRef whose identifier is a person key found in the identity index (keyed, no PHI)."""


@dataclass(frozen=True)
class PersonRef:
    """A person as the source names them: an identity namespace plus an identifier in it.

    The namespace is the profile's name for an identifier system (a DICOM IssuerOfPatientID and
    a FHIR identifier system that mean the same register map to the same namespace).
    """

    namespace: str
    identifier: str

    def canonical(self) -> str:
        """Unambiguous encoding (an issuer may itself contain any separator)."""
        return json.dumps([self.namespace, self.identifier.strip()], separators=(",", ":"))


def _b32(data: bytes, length: int) -> str:
    """Crockford base32 (no I, L, O, U): unambiguous, upper-case, fits DICOM CS/SH/LO."""
    number = int.from_bytes(data, "big")
    chars = []
    for _ in range(length):
        number, rem = divmod(number, 32)
        chars.append(_CROCKFORD[rem])
    return "".join(chars)


class Pseudonymizer:
    """All keyed replacements for one key (one destination / research project)."""

    def __init__(
        self,
        key: PseudonymKey,
        *,
        patient_id_prefix: str = "",
        date_shift_range_days: int = 365,
    ) -> None:
        if date_shift_range_days < 1:
            raise ValueError("date shift range must be at least one day")
        self.key = key
        self.patient_id_prefix = patient_id_prefix
        self.date_shift_range_days = date_shift_range_days

    # -- primitives -------------------------------------------------------------------------
    def digest(self, domain: str, value: str) -> bytes:
        return hmac.new(
            self.key.secret, domain.encode() + b"\x00" + value.encode("utf-8"), hashlib.sha256
        ).digest()

    def token(self, domain: str, value: str, length: int = 16) -> str:
        """A generic keyed pseudonym of ``length`` Crockford-base32 characters (5 bits each)."""
        if not 1 <= length <= 51:
            raise ValueError("token length out of range")
        return _b32(self.digest(domain, value), length)

    # -- UIDs ---------------------------------------------------------------------------------
    def _uuid_bytes(self, original: str) -> bytes:
        raw = bytearray(self.digest("uid", original.strip().rstrip("\x00"))[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80  # RFC 9562 version 8 (custom)
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
        return bytes(raw)

    def uid(self, original: str) -> str:
        """``2.25.<128-bit int>`` per PS3.5 B.2; at most 44 characters, always a valid UID."""
        new = "2.25." + str(int.from_bytes(self._uuid_bytes(original), "big"))
        note(IssuedKind.UID, new, original.strip().rstrip("\x00"))
        return new

    def uuid(self, original: str) -> str:
        """The same 128 bits as :meth:`uid`, as a UUID string (for ``urn:uuid:`` in FHIR)."""
        new = str(uuid.UUID(bytes=self._uuid_bytes(original)))
        note(IssuedKind.UUID, new, original)
        return new

    # -- people -------------------------------------------------------------------------------
    def person_key(self, person: PersonRef) -> str:
        """The stable key of a person from which every per-person value derives. A PersonRef
        in :data:`RESOLVED_NAMESPACE` already carries a key (from the identity index)."""
        if person.namespace == RESOLVED_NAMESPACE:
            return person.identifier
        return self.digest("person", person.canonical()).hex()

    def patient_id(self, person_key: str) -> str:
        return self.patient_id_prefix + self.token("patient-id", person_key, 16)

    def date_offset_days(self, person_key: str) -> int:
        """Non-zero offset in [-range, -1] U [1, range], the same for every date of a person."""
        number = int.from_bytes(self.digest("date-offset", person_key)[:8], "big")
        magnitude = 1 + (number >> 1) % self.date_shift_range_days
        return magnitude if number & 1 else -magnitude

    # -- other identifiers --------------------------------------------------------------------
    def accession(self, value: str, namespace: str = "") -> str:
        """Accession number pseudonym: 16 characters, fits DICOM SH."""
        new = self.token("accession", f"{namespace}|{value.strip()}", SH_MAX)
        note(IssuedKind.ACCESSION, new, value.strip())
        return new

    def identifier(self, system: str, value: str, length: int = 16) -> str:
        """Pseudonym for any other identifier (FHIR Identifier, DICOM LO/SH IDs)."""
        new = self.token("identifier", f"{system}|{value.strip()}", length)
        note(IssuedKind.IDENTIFIER, new, value.strip(), (("system", system),) if system else ())
        return new

    def resource_id(self, resource_type: str, logical_id: str) -> str:
        """FHIR logical id pseudonym (``[A-Za-z0-9-.]{1,64}``)."""
        new = self.token("resource-id", f"{resource_type}/{logical_id}", 26)
        note(IssuedKind.FHIR_ID, f"{resource_type}/{new}", f"{resource_type}/{logical_id}")
        return new

    # -- dates --------------------------------------------------------------------------------
    @staticmethod
    def shift(date: dt.date, offset_days: int) -> dt.date:
        return date + dt.timedelta(days=offset_days)
