"""DIMSE intake: a C-STORE SCP (pynetdicom) that persists each instance before acknowledging it.

The SCP runs in the Flask app's process, next to the HTTP intake, and hands what it receives to
the same durable pipeline: the received bytes (dataset as sent, with a Part 10 file meta built
from the presentation context) are spooled and a job row is committed by ``JobService.accept``
before the sender hears 0x0000. If that fails the sender gets a failure status and retries; an
acknowledged instance is never lost.

Transfer syntaxes are accepted as they come (no transcoding here): the pipeline decodes what it
must and quarantines what it cannot clean. Logs name association peers (AE titles, addresses)
and reason codes, never a data value.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from gateway.config import DimseSourceConfig, ServiceConfig
from gateway.errors import ConfigurationError, IntakeUnavailable, ReasonCode
from gateway.intake.move_routes import CHANNEL as MOVE_CHANNEL
from gateway.intake.move_routes import MoveRoute, MoveRoutes
from gateway.persistence.models import Kind
from gateway.service import EXTENSION, Gateway

LOG = logging.getLogger("gateway.intake.dimse")

CHANNEL = "c-store"

#: What the SCP accepts, stored as received. When an SCU proposes several of them for one SOP
#: class, its own order of preference wins (``prefer_requestor_order``): an SCU offering
#: [RLE, explicit LE] for an RLE image sends it as it is instead of decompressing it. This order
#: applies only after the SCU's.
TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    JPEG2000MCLossless,
    JPEG2000MC,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
)


class StoreStatus(int, Enum):
    """C-STORE response statuses this SCP sends (PS3.4 Table B.2-1)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    CANNOT_UNDERSTAND = 0xC000


def _calling(event: Event) -> str:
    """The calling AE title and peer address: association metadata, loggable (no PHI)."""
    assoc = event.assoc
    return f"{assoc.requestor.ae_title} {assoc.requestor.address}:{assoc.requestor.port}"


def calling_sender(event: Event) -> str:
    """The sender recorded in the job and the audit: the calling AE title (no PHI)."""
    return f"ae:{str(event.assoc.requestor.ae_title).strip()}"[:32]


@dataclass(frozen=True)
class Door:
    """Who may come in and where it goes: pushed instances to ``destination`` (from the
    ``pushers`` allow-list, None: any SCU); from ``mover``, the PACS an export of this
    service C-MOVEs from, the instances of a move in flight (:mod:`gateway.intake.move_routes`)
    go to that export's destination instead."""

    destination: str
    pushers: frozenset[str] | None = None
    mover: str | None = None
    routes: MoveRoutes | None = None

    def route(self, event: Event) -> tuple[str, str, str | None, MoveRoute | None] | None:
        """(destination, channel, sender, move) of this instance; None: refused (a PACS
        allowed for moves only sends what an export asked for)."""
        calling = str(event.assoc.requestor.ae_title).strip()
        if self.routes is not None and calling == self.mover:
            series_uid = event.dataset.get("SeriesInstanceUID")
            move = self.routes.find(str(series_uid)) if series_uid else None
            if move is not None:
                return move.destination, MOVE_CHANNEL, move.sender, move
        if self.pushers is None or calling in self.pushers:
            return self.destination, CHANNEL, calling_sender(event), None
        return None


def handle_store(event: Event, gateway: Gateway, door: Door) -> int:
    """Spool + row first, then the status: 0x0000 only once the instance is durable."""
    try:
        payload = event.encoded_dataset(include_meta=True)  # the received bytes, not re-encoded
    except Exception:  # noqa: BLE001 - the status code is the answer; never log the dataset
        LOG.warning("c-store refused: %s", ReasonCode.NO_DATASET.value)
        return StoreStatus.CANNOT_UNDERSTAND.value
    try:
        way = door.route(event)  # reads the database: a failure there is the SCU's to retry
        if way is None:
            LOG.warning("c-store refused: no export awaits it, from %s", _calling(event))
            return StoreStatus.CANNOT_UNDERSTAND.value
        destination, channel, sender, move = way
        receipt = gateway.jobs.accept(destination, Kind.DICOM, channel, [payload], sender=sender)
        if move is not None and door.routes is not None:
            door.routes.note(move, receipt.job_id)
    except (OSError, IntakeUnavailable) as exc:  # a full data volume, a database not writable
        reason = exc.reason if isinstance(exc, IntakeUnavailable) else ReasonCode.SPOOL_WRITE_FAILED
        LOG.error("c-store refused: %s", reason.value)
        return StoreStatus.OUT_OF_RESOURCES.value
    except Exception as exc:  # noqa: BLE001 - database or destination failure: the SCU retries
        # the exception's class names the failure; its message may quote data, so it stays out
        LOG.error("c-store refused: %s (%s)", ReasonCode.ACCEPT_FAILED.value, type(exc).__name__)
        return StoreStatus.OUT_OF_RESOURCES.value
    LOG.debug("c-store accepted into job %s from %s", receipt.job_id, _calling(event))
    return StoreStatus.SUCCESS.value


def handle_echo(event: Event) -> int:
    return StoreStatus.SUCCESS.value


def _on_established(event: Event) -> None:
    LOG.info("association established with %s", _calling(event))


def _on_rejected(event: Event) -> None:
    LOG.info("association rejected: %s", _calling(event))


def _on_aborted(event: Event) -> None:
    LOG.info("association aborted: %s", _calling(event))


def requestor_order(proposals: list[list[str]], supported: list[str]) -> list[str]:
    """Order ``supported`` so that pynetdicom, which accepts per context the first *acceptor*
    syntax the requestor proposed, gives every context its own first choice.

    ``proposals`` are the syntaxes of each context the SCU proposed for one SOP class, in its
    order of preference. Each context's first supported choice must come before its other
    choices (a topological order); contexts that contradict each other ([A, B] and [B, A]) are
    settled by the best position a syntax has in any proposal. Unproposed syntaxes keep their
    place at the end.
    """
    rank: dict[str, tuple[int, int]] = {}  # syntax -> (best position, first seen)
    blockers: dict[str, set[str]] = {}  # syntax -> first choices that must come before it
    for proposal in proposals:
        ours = [ts for ts in dict.fromkeys(proposal) if ts in supported]
        for position, syntax in enumerate(ours):
            best, seen = rank.get(syntax, (position, len(rank)))
            rank[syntax] = (min(best, position), seen)
            blockers.setdefault(syntax, set())
        for later in ours[1:]:
            blockers[later].add(ours[0])
    ordered: list[str] = []
    while blockers:
        free = [ts for ts, before in blockers.items() if not before] or list(blockers)  # cycle
        chosen = min(free, key=rank.__getitem__)
        ordered.append(chosen)
        del blockers[chosen]
        for before in blockers.values():
            before.discard(chosen)
    return [*ordered, *(ts for ts in supported if ts not in rank)]


def prefer_requestor_order(event: Event) -> None:
    """EVT_REQUESTED: rank this association's supported syntaxes by the SCU's preference.

    An SCU lists its preferred (usually native) encoding first: following its order means what
    it sends needs no conversion (nor a codec it may lack), and we store it as it was made.
    """
    proposals: dict[str, list[list[str]]] = {}
    for context in event.assoc.requestor.requested_contexts:
        proposals.setdefault(str(context.abstract_syntax), []).append(
            [str(ts) for ts in context.transfer_syntax]
        )
    for supported in event.assoc.acceptor.supported_contexts:  # this association's own copy
        wanted = proposals.get(str(supported.abstract_syntax))
        if wanted:
            ours = [str(ts) for ts in supported.transfer_syntax]
            ranked: list[str | bytes | UID] = [*requestor_order(wanted, ours)]
            supported.transfer_syntax = ranked


def build_ae(ae_title: str, calling_ae_titles: list[str] | None = None) -> AE:
    """The application entity: storage SOP classes x ``TRANSFER_SYNTAXES``, plus Verification.

    ``calling_ae_titles``: the SCUs allowed to associate (the destination's allow-list); any
    other is rejected by pynetdicom with A-ASSOCIATE-RJ, rejected-permanent, service-user,
    reason 3 "calling AE title not recognised"."""
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = True  # an SCU addressing another AE title is rejected
    if calling_ae_titles:
        ae.require_calling_aet = [title.strip() for title in calling_ae_titles]
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None  # pynetdicom's table: always set
        ae.add_supported_context(context.abstract_syntax, list(TRANSFER_SYNTAXES))
    ae.add_supported_context(
        Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
    )
    return ae


def moving_pacs_ae(config: ServiceConfig) -> str | None:
    """The PACS's AE title when this service's exports C-MOVE to this listener: it calls the
    listener for the C-STORE sub-operations, so it is let in (for awaited series only, unless
    the allow-list names it too)."""
    pacs = config.sources.pacs
    if isinstance(pacs, DimseSourceConfig) and pacs.move_destination_ae:
        return pacs.called_ae.strip()
    return None


def start_scp(core: Any) -> ThreadedAssociationServer:
    """Start the C-STORE SCP in the background (``config.dimse``); returns the server handle.

    Refuses to start (typed error) when the configured destination does not exist; a port that
    cannot be bound raises ``OSError`` from the socket layer.
    """
    gateway: Gateway = _core(core)
    config = gateway.config.dimse
    if config.destination not in gateway.destinations:
        raise ConfigurationError(
            ReasonCode.CONFIGURATION_INVALID, "dimse.destination names no configured destination"
        )
    allowed = gateway.config.destinations[config.destination].calling_ae_titles
    if allowed is not None and not allowed:
        raise ConfigurationError(
            ReasonCode.CONFIGURATION_INVALID,
            "calling_ae_titles is empty: no SCU could send; omit it for any",
        )
    if allowed is None:
        LOG.warning(
            "c-store scp: no calling_ae_titles for destination %s, any SCU may send",
            config.destination,
        )
    mover = moving_pacs_ae(gateway.config)
    door = Door(
        config.destination,
        None if allowed is None else frozenset(t.strip() for t in allowed),
        mover,
        MoveRoutes(gateway.db) if mover else None,
    )
    callers = None if allowed is None else [*allowed, *([mover] if mover else [])]
    ae = build_ae(config.ae_title, callers)
    handlers: list[EventHandlerType] = [
        (evt.EVT_C_STORE, handle_store, [gateway, door]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_REQUESTED, prefer_requestor_order),
        (evt.EVT_ESTABLISHED, _on_established),
        (evt.EVT_REJECTED, _on_rejected),
        (evt.EVT_ABORTED, _on_aborted),
    ]
    server = ae.start_server((config.host, config.port), block=False, evt_handlers=handlers)
    assert server is not None  # block=False always returns the server
    LOG.info(
        "c-store scp %s listening on %s:%d", config.ae_title, config.host, server.server_address[1]
    )
    return server


def _core(core: Any) -> Gateway:
    """The service core, given as itself or (for callers holding the Flask app) the app."""
    if isinstance(core, Gateway):
        return core
    # the key from the service core, not from the HTTP package (whose app imports the pull
    # exports, which use this module: an import cycle)
    found: Gateway = core.extensions[EXTENSION]
    return found


def stop_scp(handle: ThreadedAssociationServer, grace_seconds: float = 5.0) -> None:
    """Stop accepting, let associations in flight finish (up to ``grace_seconds``), abort the rest.

    Aborting loses nothing acknowledged: an instance is acked only once it is spooled.
    """
    handle.shutdown()
    deadline = time.monotonic() + grace_seconds
    for assoc in handle.active_associations:
        assoc.join(timeout=max(0.0, deadline - time.monotonic()))
        if assoc.is_alive():
            assoc.abort()
