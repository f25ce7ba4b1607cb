"""A destination: one research partner with its own profile, key id and stores, and the
processors built for them. Built once at start-up (service) or per run (CLI); a profile that
does not compile or a key that is missing stops the start (fail closed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config import ServiceConfig, StoreConfig
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.pipeline.dicom_stages import DicomProcessor
from gateway.profiles.compiler import (
    CompiledProfile,
    Problem,
    ProfileInvalid,
    compile_loaded,
    compile_profile,
)
from gateway.profiles.model import Profile
from gateway.stores.base import ResearchStore
from gateway.stores.folder import FolderStore

if TYPE_CHECKING:
    from gateway.pipeline.fhir_stages import FhirProcessor


@dataclass
class Destination:
    """``fhir`` is built on first use when the destination was built with ``eager_fhir=False``
    (a directory run of DICOM only never loads the FHIR engine); the service builds it at start."""

    name: str
    profile: Profile
    linkage: Linkage
    dicom: DicomProcessor
    fhir_processor: FhirProcessor | None
    dicom_store: ResearchStore
    fhir_store: ResearchStore
    patient_source: StoreConfig | None = None
    vault: bool = False  # collect pseudonym -> original for the broker vault (issue 15)

    @property
    def fhir(self) -> FhirProcessor:
        if self.fhir_processor is None:
            from gateway.pipeline import fhir_stages  # loaded on first use

            self.fhir_processor = fhir_stages.FhirProcessor(self.profile, self.linkage)
        return self.fhir_processor

    @classmethod
    def build(
        cls,
        name: str,
        profile: Profile | CompiledProfile,
        linkage: Linkage,
        dicom_store: ResearchStore,
        fhir_store: ResearchStore,
        patient_source: StoreConfig | None = None,
        *,
        eager_fhir: bool = True,
    ) -> Destination:
        """The processors from the compiled profile (compiled here when given a Profile)."""
        if not eager_fhir and not isinstance(profile, CompiledProfile):
            # a worker process of a checked run: its DICOM section only, FHIR on first use
            return cls(
                name,
                profile,
                linkage,
                DicomProcessor(profile, linkage),
                None,
                dicom_store,
                fhir_store,
                patient_source,
            )
        compiled = profile if isinstance(profile, CompiledProfile) else compile_loaded(profile)
        fhir = None
        if eager_fhir:
            from gateway.pipeline import fhir_stages

            fhir = fhir_stages.FhirProcessor(compiled.profile, linkage)
        return cls(
            name,
            compiled.profile,
            linkage,
            DicomProcessor.from_compiled(compiled, linkage),
            fhir,
            dicom_store,
            fhir_store,
            patient_source,
        )


def build_store(name: str, store: StoreConfig, config: ServiceConfig) -> ResearchStore:
    if store.type == "folder":
        return FolderStore(
            store.path or config.store_root(name), name=f"folder:{name}", exclusive=True
        )
    if store.type == "dicomweb":
        from gateway.stores.dicomweb import DicomwebStore

        return DicomwebStore.from_config(store, name=f"dicomweb:{name}")
    if store.type == "dimse":
        from gateway.stores.dimse import DimseStore

        return DimseStore.from_config(store, f"dimse:{name}", config.dimse.ae_title)
    from gateway.stores.fhir_rest import FhirRestStore

    return FhirRestStore.from_config(store)


def compile_destination_profiles(config: ServiceConfig) -> dict[str, CompiledProfile]:
    """Every destination's profile compiled; one ProfileInvalid with the problems of all."""
    compiled: dict[str, CompiledProfile] = {}
    problems: list[Problem] = []
    for name, dest in config.destinations.items():
        try:
            compiled[name] = compile_profile(dest.profile)
        except ProfileInvalid as exc:
            problems += exc.problems
    if problems:
        raise ProfileInvalid(problems)
    return compiled


def build_destinations(config: ServiceConfig, keyring: KeyRing) -> dict[str, Destination]:
    out = {}
    for name, compiled in compile_destination_profiles(config).items():
        dest = config.destinations[name]
        profile = compiled.profile
        linkage = Linkage.from_profile(profile, keyring)
        dicom_store = build_store(name, dest.store, config)
        if dest.fhir_store is not None:
            fhir_store = build_store(name, dest.fhir_store, config)
        elif dest.store.type in ("fhir", "folder"):  # one store holds both (one manifest)
            fhir_store = dicom_store
        else:  # a DICOMweb server holds no FHIR: FHIR goes to the local folder store
            fhir_store = FolderStore(config.store_root(name), name=f"folder:{name}")
        if dest.store.type == "fhir":
            dicom_store = FolderStore(
                config.store_root(name), name=f"folder:{name}", exclusive=True
            )
        out[name] = Destination.build(
            name, compiled, linkage, dicom_store, fhir_store, dest.patient_source
        )
        out[name].vault = dest.vault
    return out
