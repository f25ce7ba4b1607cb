"""A destination: one research partner with its own profile, key id and stores. Built once at
start-up; a profile that does not load or a key that is missing stops the service (fail closed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config import ServiceConfig, StoreConfig
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.pipeline.dicom_stages import DicomProcessor
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
    dicom_store: ResearchStore
    fhir_store: ResearchStore

    patient_source: StoreConfig | None = None

    def deidentify_fhir(
        self, obj: dict[str, Any], resolver: Any = None
    ) -> tuple[dict[str, Any], dict[str, int]]:
        from gateway.fhir.bundle import deidentify_fhir_with_report

        result, spans = deidentify_fhir_with_report(obj, self.profile, self.linkage, resolver)
        return result, dict(spans)


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
        out[name] = Destination(name, profile, linkage, DicomProcessor(profile, linkage),
                                dicom_store, fhir_store, dest.patient_source)
    return out
