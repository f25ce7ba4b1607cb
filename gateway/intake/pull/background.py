"""Exports started by the service (``POST /exports``): each runs in a thread of its own, at
most one per export id in this process. The run's rows are the truth (``GET /exports/{id}``
reads them); a service restarted midway resumes an export when it is posted again."""

from __future__ import annotations

import logging
import threading

from gateway.config import DimseSourceConfig
from gateway.errors import ConfigurationError, ReasonCode
from gateway.intake.move_routes import MoveRoutes
from gateway.intake.pull.export import Exporter, ExportRequest, ExportStatus
from gateway.intake.pull.sources import build_ehr, build_pacs
from gateway.persistence.models import ExportRun, utcnow
from gateway.service import Gateway

log = logging.getLogger("deid_gateway.export")


class BackgroundExports:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, request: ExportRequest) -> str:
        """The export's id; its row exists when this returns (so it can be polled)."""
        config = self.gateway.config
        pacs_config = config.sources.pacs
        moving = isinstance(pacs_config, DimseSourceConfig) and pacs_config.move_destination_ae
        if moving and config.dimse.enabled and moving != config.dimse.ae_title:
            raise ConfigurationError(
                ReasonCode.CONFIGURATION_INVALID,
                "a C-MOVE export of the service moves to its C-STORE intake: "
                "sources.pacs.move_destination_ae must be dimse.ae_title",
            )
        # the intake listening: it receives what the PACS moves (MoveRoutes); else, as the
        # CLI does, the export runs a listener of its own on dimse.host/port
        routes = MoveRoutes(self.gateway.db) if config.dimse.enabled else None
        export_id = request.export_id
        with self._lock:
            running = self._threads.get(export_id)
            if running is not None and running.is_alive():
                return export_id
            pacs, ehr = build_pacs(config, routes), build_ehr(config)
            exporter = Exporter(self.gateway, pacs, ehr)
            try:
                exporter.open(request)  # ExportBusy (409) when another process runs it
            except BaseException:
                for source in (pacs, ehr):
                    if source is not None:
                        source.close()
                raise
            thread = threading.Thread(
                target=self._run, args=(exporter, request), name=f"export-{export_id[:8]}",
                daemon=True,
            )  # fmt: skip
            self._threads[export_id] = thread
            thread.start()
        return export_id

    def _run(self, exporter: Exporter, request: ExportRequest) -> None:
        try:
            exporter.run(request)
        except Exception as exc:  # noqa: BLE001 - a thread's end: recorded, never raised
            log.error("export %s stopped: %s", request.export_id[:8], type(exc).__name__)
            with self.gateway.db.session() as session:
                run = session.get(ExportRun, request.export_id)
                if run is not None:
                    run.status = ExportStatus.FAILED.value
                    run.updated_at = utcnow()
        finally:
            for source in (exporter.pacs, exporter.ehr):
                if source is not None:
                    source.close()

    def running(self, export_id: str) -> bool:
        with self._lock:
            thread = self._threads.get(export_id)
            return thread is not None and thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the exports started here (tests, shutdown)."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)
