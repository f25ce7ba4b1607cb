"""Identity mapping: which DICOM issuer and which FHIR identifier system name the same register.

A privacy officer declares namespaces in the profile; a patient who arrives as DICOM PatientID
"123" with IssuerOfPatientID "HOSP" and as FHIR ``urn:oid:1.2.3|123`` becomes one PersonRef, so
one pseudonym and one date offset.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.linkage.pseudonym import PersonRef


@dataclass(frozen=True)
class IdentityNamespace:
    name: str
    dicom_issuers: tuple[str, ...] = ()
    fhir_systems: tuple[str, ...] = ()


class IdentityMap:
    """Resolves identifiers of either standard to a :class:`PersonRef`."""

    def __init__(
        self, namespaces: tuple[IdentityNamespace, ...], default_dicom_namespace: str
    ) -> None:
        self.namespaces = namespaces
        self.default_dicom_namespace = default_dicom_namespace
        self._by_issuer = {i.strip(): n.name for n in namespaces for i in n.dicom_issuers}
        self._by_system = {s.strip(): n.name for n in namespaces for s in n.fhir_systems}

    def from_dicom(self, patient_id: str, issuer: str | None) -> PersonRef:
        issuer = (issuer or "").strip()
        if not issuer:
            namespace = self.default_dicom_namespace
        else:
            namespace = self._by_issuer.get(issuer, f"dicom-issuer:{issuer}")
        return PersonRef(namespace, patient_id)

    def from_fhir(self, system: str | None, value: str) -> PersonRef | None:
        """A PersonRef when ``system`` is a declared patient register, else None."""
        namespace = self._by_system.get((system or "").strip())
        return PersonRef(namespace, value) if namespace else None

    def fhir_systems_of_dicom(self, issuer: str | None) -> tuple[str, ...]:
        """The FHIR identifier systems of the register a DICOM issuer names (the default
        namespace for no issuer): where a patient seen only as DICOM is found by its MRN.
        Empty when no namespace declares that register."""
        issuer = (issuer or "").strip()
        name = self._by_issuer.get(issuer) if issuer else self.default_dicom_namespace
        return tuple(s.strip() for n in self.namespaces if n.name == name for s in n.fhir_systems)

    def is_patient_system(self, system: str | None) -> bool:
        return (system or "").strip() in self._by_system

    def undeclared_issuer(self, issuer: str | None) -> str | None:
        """``dicom-issuer:<name>`` when a DICOM issuer is given that no namespace declares:
        its patients cannot be linked to FHIR until the privacy officer declares it."""
        issuer = (issuer or "").strip()
        return f"dicom-issuer:{issuer}" if issuer and issuer not in self._by_issuer else None

    def undeclared_systems(self, patient: dict[str, object]) -> list[str]:
        """``fhir-system:<uri>`` for each medical-record-number identifier (type MR) of a
        Patient whose system no namespace declares."""
        found = []
        identifiers = patient.get("identifier")
        for identifier in identifiers if isinstance(identifiers, list) else []:
            if not isinstance(identifier, dict) or not _is_mrn(identifier):
                continue
            system = identifier.get("system")
            if isinstance(system, str) and system.strip() and not self.is_patient_system(system):
                found.append(f"fhir-system:{system.strip()}")
        return found


def _is_mrn(identifier: dict[str, object]) -> bool:
    kind = identifier.get("type")
    codings = kind.get("coding") if isinstance(kind, dict) else None
    return (
        any(isinstance(c, dict) and c.get("code") == "MR" for c in codings or [])
        if isinstance(codings, list)
        else False
    )
