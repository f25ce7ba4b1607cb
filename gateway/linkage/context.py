"""Everything a de-identifier needs from the linkage core, built once from a profile + key."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.linkage.identity import IdentityMap, IdentityNamespace
from gateway.linkage.keys import KeyRing, PseudonymKey
from gateway.linkage.pseudonym import PersonRef, Pseudonymizer
from gateway.profiles.model import DateMethod, Profile


@dataclass(frozen=True)
class PersonPseudonym:
    """The per-person outputs that must be equal in DICOM and FHIR."""

    person_key: str
    patient_id: str
    date_offset_days: int


class Linkage:
    """Pseudonymizer + identity map for one profile and key. Immutable; safe to share."""

    def __init__(self, profile: Profile, key: PseudonymKey) -> None:
        settings = profile.linkage
        self.profile = profile
        self.date_method = settings.dates.method
        self.pseudonymizer = Pseudonymizer(
            key,
            patient_id_prefix=settings.patient_id_prefix,
            date_shift_range_days=settings.dates.range_days,
        )
        self.identity = IdentityMap(
            tuple(
                IdentityNamespace(n.name, tuple(n.dicom_issuers), tuple(n.fhir_systems))
                for n in settings.identity.namespaces
            ),
            settings.identity.default_dicom_namespace,
        )

    @classmethod
    def from_profile(cls, profile: Profile, keyring: KeyRing) -> Linkage:
        return cls(profile, keyring.get(profile.linkage.key_id))

    def person(self, ref: PersonRef) -> PersonPseudonym:
        p = self.pseudonymizer
        key = p.person_key(ref)
        return PersonPseudonym(key, p.patient_id(key), p.date_offset_days(key))

    def person_from_dicom(self, patient_id: str, issuer: str | None) -> PersonPseudonym:
        return self.person(self.identity.from_dicom(patient_id, issuer))

    @property
    def shifts_dates(self) -> bool:
        return self.date_method is DateMethod.SHIFT
