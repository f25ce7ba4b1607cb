"""Value-level methods: identifiers (the DICOM links), dates, generalisation, perturbation,
encryption. Each returns the new value or raises :class:`QuarantineError` (never a value in the
message)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from typing import Any

from gateway.errors import ConfigurationError, QuarantineError, ReasonCode
from gateway.linkage.context import Linkage, PersonPseudonym
from gateway.linkage.dates import fhir_year_only, shift_fhir_date
from gateway.linkage.issued import IssuedKind, note
from gateway.profiles.fhir_model import Granularity, PseudonymKind
from gateway.profiles.model import DateMethod

ACSN_CODE = "ACSN"
DICOM_UID_SYSTEMS = frozenset({"urn:dicom:uid", "urn:ietf:rfc:3986"})

# HHS Safe Harbor guidance: 3-digit ZIPs with <= 20,000 people (2000 census) become 000.
RESTRICTED_ZIP3 = frozenset(
    {"036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
     "879", "884", "890", "893"}
)  # fmt: skip


def _stage(path: str) -> str:
    return f"fhir:{path}"


# -- dates ------------------------------------------------------------------------------------
def transform_date(
    value: str, type_name: str, linkage: Linkage, offset_days: int, path: str
) -> str:
    """dateShift: the per-patient offset (SHIFT) or the year only (YEAR_ONLY)."""
    if linkage.date_method is DateMethod.SHIFT:
        out = shift_fhir_date(value, offset_days)
    else:
        out = fhir_year_only(value)
        if out is not None and type_name == "instant":
            out = f"{out}-01-01T00:00:00Z"
    if out is None:
        raise QuarantineError(
            ReasonCode.FHIR_INVALID, f"date value not understood at {path}", stage=_stage(path)
        )
    return out


def generalize_date(value: str, type_name: str, granularity: Granularity, path: str) -> str:
    year = fhir_year_only(value)
    if year is None:
        raise QuarantineError(
            ReasonCode.FHIR_INVALID, f"date value not understood at {path}", stage=_stage(path)
        )
    if granularity is Granularity.MONTH and len(value) >= 7 and type_name != "instant":
        return value[:7]
    if type_name == "instant":
        return f"{year}-01-01T00:00:00Z"
    return year


def age_capped_year(value: str, cap_years: int, today: dt.date, path: str) -> str:
    """Year of birth only; years implying an age above ``cap_years`` collapse to one year."""
    year = fhir_year_only(value)
    if year is None:
        raise QuarantineError(
            ReasonCode.FHIR_INVALID, f"date value not understood at {path}", stage=_stage(path)
        )
    oldest = today.year - cap_years - 1
    return str(max(int(year), oldest)).zfill(4)


# -- identifiers ------------------------------------------------------------------------------
def _has_type_code(identifier: dict[str, Any], code: str) -> bool:
    concept = identifier.get("type")
    if not isinstance(concept, dict):
        return False
    return any(isinstance(c, dict) and c.get("code") == code for c in concept.get("coding") or [])


def pseudonymise_identifier(
    identifier: dict[str, Any],
    *,
    linkage: Linkage,
    path: str,
    resource_type: str,
    kind: PseudonymKind,
    patient_identifier_system: str | None,
    person_for_patient: PersonPseudonym | None,
) -> dict[str, Any]:
    """Identifier.value (and possibly .system) per the linkage contract with DICOM.

    * a system declared in an identity namespace -> the person's ``patient_id`` (= DICOM PatientID)
    * ``urn:oid:<uid>`` values (ImagingStudy StudyInstanceUID forms) -> ``urn:oid:`` + ``uid()``
    * type ACSN, ServiceRequest identifiers, ``basedOn.identifier`` -> ``accession()``
    * anything else -> ``identifier(system, value)``, system kept
    """
    out = dict(identifier)
    value = identifier.get("value")
    if not isinstance(value, str):
        return out
    system = identifier.get("system") if isinstance(identifier.get("system"), str) else None
    p = linkage.pseudonymizer
    if kind is PseudonymKind.AUTO:
        if linkage.identity.is_patient_system(system):
            kind = PseudonymKind.PATIENT
        elif value.startswith("urn:oid:") or system in DICOM_UID_SYSTEMS:
            kind = PseudonymKind.UID
        elif (
            _has_type_code(identifier, ACSN_CODE)
            or (resource_type == "ServiceRequest" and path == "ServiceRequest.identifier")
            or path.endswith(".basedOn.identifier")
        ):
            kind = PseudonymKind.ACCESSION
        else:
            kind = PseudonymKind.IDENTIFIER
    if kind is PseudonymKind.PATIENT:
        ref = linkage.identity.from_fhir(system, value)
        if ref is not None:
            out["value"] = linkage.person(ref).patient_id
            note(IssuedKind.PATIENT, out["value"], value)  # no context: DICOM brings the module
        elif person_for_patient is not None:
            out["value"] = person_for_patient.patient_id
            note(IssuedKind.PATIENT, out["value"], value)  # no context: DICOM brings the module
        else:
            out["value"] = p.identifier(system or "", value)
        if patient_identifier_system:
            out["system"] = patient_identifier_system
    elif kind is PseudonymKind.UID:
        bare = value.removeprefix("urn:oid:")
        out["value"] = "urn:oid:" + p.uid(bare) if value.startswith("urn:oid:") else p.uid(bare)
    elif kind is PseudonymKind.ACCESSION:
        out["value"] = p.accession(value)
    else:
        out["value"] = pseudonymise_primitive(value, kind, linkage, system or "", None)
    return out


def pseudonymise_primitive(
    value: str,
    kind: PseudonymKind,
    linkage: Linkage,
    domain: str,
    person: PersonPseudonym | None,
) -> str:
    p = linkage.pseudonymizer
    if kind is PseudonymKind.UID:
        return p.uid(value)
    if kind is PseudonymKind.UUID:
        return p.uuid(value)
    if kind is PseudonymKind.ACCESSION:
        return p.accession(value)
    if kind is PseudonymKind.PATIENT and person is not None:
        return person.patient_id
    if kind is PseudonymKind.TOKEN:
        return p.token(f"fhir:{domain}", value)
    return p.identifier(domain, value)


# -- addresses --------------------------------------------------------------------------------
def generalize_address(address: dict[str, Any], granularity: Granularity) -> dict[str, Any]:
    """Keep state and country (and ZIP3 for ``zip3``); everything smaller than a state goes."""
    out: dict[str, Any] = {
        k: address[k] for k in ("use", "type", "state", "country") if k in address
    }
    postal = address.get("postalCode")
    if granularity is Granularity.ZIP3 and isinstance(postal, str):
        digits = "".join(ch for ch in postal if ch.isdigit())
        if len(digits) >= 3:
            zip3 = digits[:3]
            out["postalCode"] = "000" if zip3 in RESTRICTED_ZIP3 else zip3
    return out


# -- numbers ----------------------------------------------------------------------------------
def perturb_number(value: Any, fraction: float, linkage: Linkage, domain: str) -> Any:
    """Keyed, deterministic noise in [-fraction, +fraction] of the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    digest = linkage.pseudonymizer.digest(f"perturb:{domain}", repr(value))
    unit = int.from_bytes(digest[:8], "big") / 2**64 * 2 - 1
    out = value * (1 + unit * fraction)
    return round(out) if isinstance(value, int) else round(out, 6)


# -- encryption -------------------------------------------------------------------------------
class Encryptor:
    """Deterministic AES-256-GCM (nonce = keyed HMAC of the plaintext), ``enc:v1:<base64>``.

    The key is derived from the pseudonymisation key, so whoever holds that key can decrypt;
    equal inputs give equal outputs (joinable) and nothing else is revealed.
    """

    def __init__(self, linkage: Linkage) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:  # pragma: no cover - dependency present in the image
            raise ConfigurationError(
                ReasonCode.PROFILE_INVALID, "method 'encrypt' needs the package cryptography"
            ) from exc
        secret = linkage.pseudonymizer.key.secret
        self._key = hmac.new(secret, b"deid-gateway/fhir-encrypt", hashlib.sha256).digest()
        self._nonce_key = hmac.new(secret, b"deid-gateway/fhir-nonce", hashlib.sha256).digest()
        self._aead = AESGCM(self._key)

    def encrypt(self, value: str) -> str:
        data = value.encode("utf-8")
        nonce = hmac.new(self._nonce_key, data, hashlib.sha256).digest()[:12]
        return "enc:v1:" + base64.b64encode(nonce + self._aead.encrypt(nonce, data, None)).decode()

    def decrypt(self, token: str) -> str:
        raw = base64.b64decode(token.removeprefix("enc:v1:"))
        return self._aead.decrypt(raw[:12], raw[12:], None).decode("utf-8")
