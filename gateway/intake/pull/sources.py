"""The configured sources, built once per export: ``sources.pacs`` by its ``type`` (a table,
not a chain of ifs) and ``sources.ehr``."""

from __future__ import annotations

from collections.abc import Callable

from gateway.config import DicomwebSourceConfig, DimseSourceConfig, SourcesConfig
from gateway.intake.pull.ehr import FhirEhr
from gateway.intake.pull.pacs import Pacs


def _dicomweb(config: DicomwebSourceConfig | DimseSourceConfig) -> Pacs:
    from gateway.intake.pull.dicomweb import DicomwebPacs

    assert isinstance(config, DicomwebSourceConfig)
    return DicomwebPacs(config)


def _dimse(config: DicomwebSourceConfig | DimseSourceConfig) -> Pacs:
    from gateway.intake.pull.dimse import DimsePacs

    assert isinstance(config, DimseSourceConfig)
    return DimsePacs(config)


PACS_TYPES: dict[str, Callable[[DicomwebSourceConfig | DimseSourceConfig], Pacs]] = {
    "dicomweb": _dicomweb,
    "dimse": _dimse,
}


def build_pacs(sources: SourcesConfig) -> Pacs | None:
    return None if sources.pacs is None else PACS_TYPES[sources.pacs.type](sources.pacs)


def build_ehr(sources: SourcesConfig) -> FhirEhr | None:
    return None if sources.ehr is None else FhirEhr(sources.ehr)
