"""The configured sources, built once per export: ``sources.pacs`` by its ``type`` (a table,
not a chain of ifs) and ``sources.ehr``."""

from __future__ import annotations

from collections.abc import Callable

from gateway.config import DicomwebSourceConfig, DimseConfig, DimseSourceConfig, ServiceConfig
from gateway.intake.move_routes import MoveRoutes
from gateway.intake.pull.ehr import FhirEhr
from gateway.intake.pull.pacs import Pacs

AnyPacs = DicomwebSourceConfig | DimseSourceConfig


def _dicomweb(config: AnyPacs, listener: DimseConfig, routes: MoveRoutes | None) -> Pacs:
    from gateway.intake.pull.dicomweb import DicomwebPacs

    assert isinstance(config, DicomwebSourceConfig)
    return DicomwebPacs(config)


def _dimse(config: AnyPacs, listener: DimseConfig, routes: MoveRoutes | None) -> Pacs:
    from gateway.intake.pull.dimse import DimsePacs

    assert isinstance(config, DimseSourceConfig)
    return DimsePacs(config, listener, routes)


PACS_TYPES: dict[str, Callable[[AnyPacs, DimseConfig, MoveRoutes | None], Pacs]] = {
    "dicomweb": _dicomweb,
    "dimse": _dimse,
}


def build_pacs(config: ServiceConfig, routes: MoveRoutes | None = None) -> Pacs | None:
    """``dimse`` (C-MOVE): without ``routes`` the export's receiver listens where the
    configuration's C-STORE listener does (``dimse.host`` / ``dimse.port``, the CLI); with
    them the service's running intake receives the moved instances (``POST /exports``)."""
    pacs = config.sources.pacs
    return None if pacs is None else PACS_TYPES[pacs.type](pacs, config.dimse, routes)


def build_ehr(config: ServiceConfig) -> FhirEhr | None:
    return None if config.sources.ehr is None else FhirEhr(config.sources.ehr)
