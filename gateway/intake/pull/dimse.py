"""The DIMSE route (pynetdicom): C-FIND at study level, then series level, finds an entry's
series; C-GET fetches a series on the SCU's own association, or (``move_destination_ae`` set)
C-MOVE sends it to a C-STORE listener of the gateway. The CLI's export runs that listener
itself on ``dimse.host`` / ``dimse.port`` and accepts what it receives like a C-GET's
instances; the service (its C-STORE intake, ``dimse.enabled``, holds that port) has the PACS
move to its intake instead, which accepts the instances for the export
(:mod:`gateway.intake.move_routes`), and the export counts what the final C-MOVE response
says (:meth:`DimsePacs.relay_series`). One association per operation, each waiting for the
rate limiter."""

from __future__ import annotations

import errno
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.transport import ThreadedAssociationServer

from gateway.config import DimseConfig, DimseSourceConfig
from gateway.errors import ConfigurationError, ReasonCode
from gateway.intake.dimse import TRANSFER_SYNTAXES, build_ae, prefer_requestor_order
from gateway.intake.move_routes import MoveRoutes
from gateway.intake.pull.cohort import CohortEntry
from gateway.intake.pull.limits import RateLimiter
from gateway.intake.pull.pacs import (
    SeriesRef,
    SourceUnavailable,
    StudyFilter,
    StudyRef,
    keep_series,
    matches,
)

LOG = logging.getLogger("gateway.intake.pull.dimse")

PENDING = (0xFF00, 0xFF01)
SUCCESS = 0x0000
STORE_OK = 0x0000
STORE_REFUSED = 0xC000  # an instance this export did not ask for
END = object()  # the fetch's queue is closed


def _str(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value) if value not in (None, "") else None


class DimsePacs:
    def __init__(self, config: DimseSourceConfig, listener: DimseConfig | None = None,
                 routes: MoveRoutes | None = None) -> None:  # fmt: skip
        """``routes``: the service's own C-STORE listener receives what a C-MOVE brings
        (:meth:`relay_series`); without them the export runs a listener of its own."""
        self.config = config
        self.limiter = RateLimiter(config.requests_per_second)
        self.route = "c-move" if config.move_destination_ae else "c-get"
        self.listener = listener or DimseConfig()
        self.routes = routes if config.move_destination_ae else None
        self.relaying = self.routes is not None
        self._receiver: MoveReceiver | None = None
        self._receiver_lock = threading.Lock()

    # -- C-FIND -------------------------------------------------------------------------------
    def find_studies(self, entry: CohortEntry, filters: StudyFilter) -> list[StudyRef]:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = entry.mrn or ""
        query.IssuerOfPatientID = ""
        query.AccessionNumber = entry.accession or ""
        query.StudyInstanceUID = entry.study_uid or ""
        query.StudyDate = filters.date_range or ""
        studies = []
        for found in self._find(query, "C-FIND study"):
            study_uid = _str(found, "StudyInstanceUID")
            patient_id, issuer = _str(found, "PatientID"), _str(found, "IssuerOfPatientID")
            if study_uid and matches(entry, patient_id, issuer,
                                     _str(found, "AccessionNumber"), study_uid):  # fmt: skip
                series = keep_series(self._series(study_uid), filters)
                if series:
                    studies.append(StudyRef(study_uid, patient_id, issuer, series))
        return studies

    def _series(self, study_uid: str) -> list[SeriesRef]:
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = ""
        query.Modality = ""
        refs = []
        for found in self._find(query, "C-FIND series"):
            series_uid = _str(found, "SeriesInstanceUID")
            if series_uid and _str(found, "StudyInstanceUID") in (None, study_uid):
                refs.append(SeriesRef(study_uid, series_uid, _str(found, "Modality")))
        return refs

    def _find(self, query: Dataset, step: str) -> list[Dataset]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = self._associate(ae, step)
        try:
            results: list[Dataset] = []
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            ):
                code = _status(status, step)
                if code in PENDING and identifier is not None:
                    results.append(identifier)
                elif code != SUCCESS:
                    raise SourceUnavailable(
                        ReasonCode.SOURCE_REFUSED, f"{step}: status 0x{code:04X}"
                    )
            return results
        finally:
            assoc.release()

    # -- C-GET / C-MOVE -----------------------------------------------------------------------
    def fetch_series(self, series: SeriesRef) -> Iterator[bytes]:
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = series.study_uid
        query.SeriesInstanceUID = series.series_uid
        if self.config.move_destination_ae:
            yield from self._move(query, series.series_uid)
        else:
            yield from self._get(query)

    def _get(self, query: Dataset) -> Iterator[bytes]:
        """C-GET: the PACS sends the instances back as C-STORE requests on this association
        (SCP role negotiated for the storage SOP classes proposed with it)."""
        received: queue.Queue[bytes] = queue.Queue()

        def on_store(event: Event) -> int:
            received.put(event.encoded_dataset(include_meta=True))
            return STORE_OK

        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        roles = []
        for context in StoragePresentationContexts[:120]:  # 128 contexts at most per association
            assert context.abstract_syntax is not None
            ae.add_requested_context(context.abstract_syntax, list(TRANSFER_SYNTAXES))
            roles.append(build_role(context.abstract_syntax, scp_role=True))
        assoc = self._associate(ae, "C-GET", roles, [(evt.EVT_C_STORE, on_store)])
        try:
            responses = assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
            yield from _relay(responses, received, "C-GET")
        finally:
            assoc.release()

    def _move(self, query: Dataset, series_uid: str) -> Iterator[bytes]:
        receiver = self._move_receiver()
        received = receiver.expect(series_uid)
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = self._associate(ae, "C-MOVE")
        try:
            destination = str(self.config.move_destination_ae)
            responses = assoc.send_c_move(
                query, destination, StudyRootQueryRetrieveInformationModelMove
            )
            yield from _relay(responses, received, "C-MOVE")
        finally:
            receiver.forget(series_uid)
            assoc.release()

    def relay_series(
        self, series: SeriesRef, export_id: str, ref_hash: str
    ) -> tuple[int, list[str]]:
        """C-MOVE to the service's listener, which accepts the instances itself (for this
        export: :class:`MoveRoutes`); (instances, their jobs) once the final response says
        every sub-operation completed. Failed sub-operations, or fewer instances reaching
        the export than completed, fail the series: it is not recorded, a rerun moves it
        again."""
        assert self.routes is not None
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = series.study_uid
        query.SeriesInstanceUID = series.series_uid
        move_id = self.routes.open(export_id, ref_hash)
        try:
            ae = self._ae()
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = self._associate(ae, "C-MOVE")
            try:
                responses = assoc.send_c_move(query, str(self.config.move_destination_ae),
                                              StudyRootQueryRetrieveInformationModelMove)  # fmt: skip
                final = _final(responses, "C-MOVE")
            finally:
                assoc.release()
        finally:
            job_ids = self.routes.close(move_id)
        code, done, failed = final
        if code != SUCCESS or failed:
            raise SourceUnavailable(
                ReasonCode.SOURCE_REFUSED, f"C-MOVE: status 0x{code:04X}, {failed} failed"
            )
        if len(job_ids) < done:
            raise SourceUnavailable(
                ReasonCode.SOURCE_REFUSED,
                f"C-MOVE: {len(job_ids)} of {done} sub-operations reached the export",
            )
        return done, job_ids

    def _move_receiver(self) -> MoveReceiver:
        with self._receiver_lock:
            if self._receiver is None:
                self._receiver = MoveReceiver(
                    str(self.config.move_destination_ae), self.config.called_ae, self.listener
                )
            return self._receiver

    # -- associations -------------------------------------------------------------------------
    def _ae(self) -> AE:
        ae = AE(ae_title=self.config.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.config.timeout_seconds
        return ae

    def _associate(self, ae: AE, step: str, roles: list[Any] | None = None,
                   handlers: list[Any] | None = None) -> Association:  # fmt: skip
        self.limiter.wait()
        try:
            assoc = ae.associate(self.config.host, self.config.port, ae_title=self.config.called_ae,
                                 ext_neg=roles, evt_handlers=handlers)  # fmt: skip
        except OSError as exc:
            raise SourceUnavailable(detail=f"{step}: {type(exc).__name__}") from None
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
            raise SourceUnavailable(detail=f"{step}: association {why}")
        return assoc

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None


def _status(status: Dataset, step: str) -> int:
    if "Status" not in status:  # no response: the association was aborted or timed out
        raise SourceUnavailable(detail=f"{step}: no response")
    return int(status.Status)


def _final(responses: Iterator[tuple[Dataset, Dataset | None]], step: str) -> tuple[int, int, int]:
    """The final response's (status, completed + warning, failed) sub-operations."""
    final: tuple[int, int, int] = (SUCCESS, 0, 0)
    for status, _identifier in responses:
        code = _status(status, step)
        if code not in PENDING:
            done = sum(int(status.get(k) or 0) for k in ("NumberOfCompletedSuboperations",
                                                          "NumberOfWarningSuboperations"))  # fmt: skip
            final = (code, done, int(status.get("NumberOfFailedSuboperations") or 0))
    return final


def _relay(responses: Iterator[tuple[Dataset, Dataset | None]], received: queue.Queue[Any],
           step: str) -> Iterator[bytes]:  # fmt: skip
    """The instances received so far after each response; a final status other than success
    (some sub-operations failed) fails the fetch once what came is handed on: the series is
    not recorded as fetched, so the next run asks for it again."""
    final = SUCCESS
    failed = 0
    for status, _identifier in responses:
        code = _status(status, step)
        yield from _drain(received)
        if code not in PENDING:
            final = code
            failed = int(status.get("NumberOfFailedSuboperations") or 0)
    yield from _drain(received)
    if final != SUCCESS or failed:
        raise SourceUnavailable(
            ReasonCode.SOURCE_REFUSED, f"{step}: status 0x{final:04X}, {failed} failed"
        )


def _errno(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _drain(received: queue.Queue[Any]) -> Iterator[bytes]:
    while True:
        try:
            item = received.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, bytes):
            yield item


class MoveReceiver:
    """The C-STORE listener a C-MOVE sends to, run by the export (``dimse.host`` /
    ``dimse.port``, AE title ``move_destination_ae``, calling AE title the PACS's only). Each
    instance goes to the fetch waiting for its series; one nobody asked for is refused."""

    def __init__(self, ae_title: str, pacs_ae: str, listener: DimseConfig) -> None:
        self._sinks: dict[str, queue.Queue[Any]] = {}
        self._lock = threading.Lock()
        ae = build_ae(ae_title, [pacs_ae])
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_REQUESTED, prefer_requestor_order),
        ]
        try:
            server = ae.start_server((listener.host, listener.port), block=False,
                                     evt_handlers=handlers)  # fmt: skip
        except OSError as exc:  # e.g. serve's own C-STORE intake listens there
            raise ConfigurationError(
                ReasonCode.CONFIGURATION_INVALID,
                f"the C-MOVE receiver cannot listen on dimse.host/dimse.port ({_errno(exc)})",
            ) from None
        assert server is not None
        self.server: ThreadedAssociationServer = server
        LOG.info("c-move receiver %s listening on %s:%d", ae_title, listener.host,
                 server.server_address[1])  # fmt: skip

    def expect(self, series_uid: str) -> queue.Queue[Any]:
        with self._lock:
            return self._sinks.setdefault(series_uid, queue.Queue())

    def forget(self, series_uid: str) -> None:
        with self._lock:
            self._sinks.pop(series_uid, None)

    def _on_store(self, event: Event) -> int:
        try:
            series_uid = str(event.dataset.SeriesInstanceUID)
            payload = event.encoded_dataset(include_meta=True)
        except Exception:  # noqa: BLE001 - the status is the answer; the dataset is not logged
            return STORE_REFUSED
        with self._lock:
            sink = self._sinks.get(series_uid)
        if sink is None:
            LOG.warning("c-move receiver refused an instance no fetch asked for")
            return STORE_REFUSED
        sink.put(payload)
        return STORE_OK

    def close(self) -> None:
        self.server.shutdown()
