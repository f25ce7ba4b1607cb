"""The stages of the way back: a result returned by a partner -> mapped to the original
patient and study through the vault -> the destination's clinical PACS / FHIR server.

The one runner runs them for payloads of a result kind (``PayloadKind.DICOM_RESULT``,
``FHIR_RESULT``) and makes their outcome, so the job engine gives returned results the same
durability, retries and quarantine as everything else: a
clinical store that is down makes the item wait (``retry``), a result that references an
unknown pseudonym or another destination's is quarantined with the reason and never
forwarded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gateway.broker.clinical_patients import ClinicalPatients, FhirPatientSearch, PatientSearch
from gateway.broker.resolve import ReturnResolver
from gateway.broker.returned import ReturnedUids
from gateway.broker.vault import Vault
from gateway.config import ReturnsConfig, ServiceConfig, StoreConfig
from gateway.dicom.reader import read_dicom
from gateway.errors import ConfigurationError, QuarantineError, ReasonCode
from gateway.fhir.sniff import parse_fhir_json
from gateway.linkage.identity import IdentityMap
from gateway.pipeline.destinations import build_store
from gateway.pipeline.payload import Payload, PayloadKind
from gateway.stores.base import ResearchStore

#: The job channels of returned results (a job's channel picks the runner).
RETURN_CHANNEL_PREFIX = "return-"


def is_return(channel: str) -> bool:
    return channel.startswith(RETURN_CHANNEL_PREFIX)


class ReturnRunner:
    """The result stages of one destination (built once, thread-compatible)."""

    def __init__(
        self,
        destination: str,
        settings: ReturnsConfig,
        vault: Vault,
        dicom_store: ResearchStore | None,
        fhir_store: ResearchStore | None,
        identity: IdentityMap | None = None,
        patient_search: PatientSearch | None = None,
    ) -> None:
        """``identity``: the destination profile's namespaces, ``patient_search`` the clinical
        FHIR server's Patient search (both for patients delivered as DICOM only)."""
        self.destination = destination
        self.identity = identity
        self.patient_search = patient_search
        self.settings = settings
        self.vault = vault
        self.returned = ReturnedUids(vault.db)
        self.dicom_store = dicom_store
        self.fhir_store = fhir_store
        self._stages: dict[str, Callable[[Payload, ReturnResolver], list[str]]] = {
            PayloadKind.DICOM.value: self._dicom,
            PayloadKind.FHIR.value: self._fhir,
        }

    def map_back(self, payload: Payload) -> list[str]:
        """The result mapped back and stored at the clinic (the one runner's result stage);
        raises as any stage does, the runner makes the outcome."""
        resolver = ReturnResolver(
            self.vault, self.destination, self.settings.uid_root, self.returned, payload.source
        )
        return self._stages[payload.kind.standard](payload, resolver)

    def _dicom(self, payload: Payload, resolver: ReturnResolver) -> list[str]:
        from gateway.broker.return_dicom import map_back

        if payload.path is None or self.dicom_store is None:
            raise QuarantineError(
                ReasonCode.CONFIGURATION_INVALID, "no clinical PACS configured", stage="return"
            )
        ds = map_back(read_dicom(payload.path), resolver, self.settings, self.destination)
        ref = str(self.dicom_store.put_dicom(ds))
        # in the clinic now: what cites it from now on maps to its new UIDs (value-free rows)
        self.returned.record(self.destination, resolver.minted)
        return [ref]

    def _fhir(self, payload: Payload, resolver: ReturnResolver) -> list[str]:
        from gateway.broker.return_fhir import map_back

        if self.fhir_store is None:
            raise QuarantineError(
                ReasonCode.CONFIGURATION_INVALID,
                "no clinical FHIR server configured",
                stage="return",
            )
        obj = parse_fhir_json(payload.read_bytes())
        patients = ClinicalPatients(self.identity, self.patient_search)
        resources = map_back(obj, resolver, self.settings, self.destination, patients)
        refs = list(self.fhir_store.put_fhir(resources))
        self.returned.record(self.destination, resolver.minted)  # what later results may cite
        return refs


def build_return_runners(
    config: ServiceConfig,
    vault: Vault | None,
    identities: Mapping[str, IdentityMap] | None = None,
) -> dict[str, ReturnRunner]:
    """A runner per destination that configures ``returns`` (and keeps a vault: without one
    nothing can be mapped back, and its return doors refuse). ``identities``: each
    destination's identity map (its profile's namespaces)."""
    out: dict[str, ReturnRunner] = {}
    if vault is None:
        return out
    for name, dest in config.destinations.items():
        settings = dest.returns
        if settings is None or not dest.vault:
            continue
        dicom = _clinical_store(name, settings.dicom_store, config)
        fhir = _clinical_store(name, settings.fhir_store, config)
        fhir_config = settings.fhir_store
        search = (
            FhirPatientSearch(fhir_config)
            if fhir_config is not None and fhir_config.type == "fhir"
            else None
        )
        identity = (identities or {}).get(name)
        out[name] = ReturnRunner(name, settings, vault, dicom, fhir, identity, search)
    return out


def check_returns(config: ServiceConfig) -> None:
    """Every destination's clinical stores build (before a server binds): a misconfigured way
    back stops the start, it does not quarantine results one by one."""
    for name, dest in config.destinations.items():
        if dest.returns is not None:
            _clinical_store(name, dest.returns.dicom_store, config)
            _clinical_store(name, dest.returns.fhir_store, config)


def _clinical_store(
    name: str, store: StoreConfig | None, config: ServiceConfig
) -> ResearchStore | None:
    """A clinical store as configured; a folder one must name its path (its default would be
    the research store's folder, which the partner reads)."""
    if store is None:
        return None
    if store.type == "folder" and store.path is None:
        raise ConfigurationError(
            ReasonCode.CONFIGURATION_INVALID,
            f"destination '{name}': a clinical folder store under returns needs a path",
        )
    return build_store(name, store, config)
