"""A destination: one research partner with its own profile, key id and stores, and the
processors built for them. Built once at start-up (service) or per run (CLI); a profile that
does not compile or a key that is missing stops the start (fail closed)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import ServiceConfig, StoreConfig
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.pipeline.dicom_stages import DicomProcessor
from gateway.pipeline.fhir_stages import FhirProcessor
from gateway.profiles.loader import load_profile
from gateway.profiles.model import Profile
from gateway.stores.base import ResearchStore
from gateway.stores.folder import FolderStore


@dataclass
class Destination:
    name: str
    profile: Profile
    linkage: Linkage
    dicom: DicomProcessor
    fhir: FhirProcessor
    dicom_store: ResearchStore
    fhir_store: ResearchStore
    patient_source: StoreConfig | None = None

    @classmethod
    def build(
        cls,
        name: str,
        profile: Profile,
        linkage: Linkage,
        dicom_store: ResearchStore,
        fhir_store: ResearchStore,
        patient_source: StoreConfig | None = None,
    ) -> Destination:
        return cls(
            name,
            profile,
            linkage,
            DicomProcessor(profile, linkage),
            FhirProcessor(profile, linkage),
            dicom_store,
            fhir_store,
            patient_source,
        )


def build_store(name: str, store: StoreConfig, config: ServiceConfig) -> ResearchStore:
    if store.type == "folder":
        return FolderStore(store.path or config.store_root(name), name=f"folder:{name}")
    if store.type == "dicomweb":
        from gateway.stores.dicomweb import DicomwebStore

        return DicomwebStore.from_config(store, name=f"dicomweb:{name}")
    from gateway.stores.fhir_rest import FhirRestStore

    return FhirRestStore.from_config(store)


def build_destinations(config: ServiceConfig, keyring: KeyRing) -> dict[str, Destination]:
    out = {}
    for name, dest in config.destinations.items():
        profile = load_profile(dest.profile)
        linkage = Linkage.from_profile(profile, keyring)
        dicom_store = build_store(name, dest.store, config)
        if dest.fhir_store is not None:
            fhir_store = build_store(name, dest.fhir_store, config)
        elif dest.store.type == "fhir":
            fhir_store = dicom_store
        else:  # a DICOMweb server holds no FHIR: FHIR goes to the local folder store
            fhir_store = FolderStore(config.store_root(name), name=f"folder:{name}")
        if dest.store.type == "fhir":
            dicom_store = FolderStore(config.store_root(name), name=f"folder:{name}")
        out[name] = Destination.build(
            name, profile, linkage, dicom_store, fhir_store, dest.patient_source
        )
    return out
