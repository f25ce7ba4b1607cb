"""A DICOMweb research store: STOW-RS (PS3.18 10.5) of de-identified instances.

One instance per request, so that a failure is the failure of that item alone. What can be
retried (the server is down, times out, answers 5xx, 408, 429, or says it is out of resources)
raises :class:`StoreUnavailable`, and so does a 404/405 for the endpoint itself (a wrong
base URL: the destination is misconfigured, not the data); what the server refuses for good (other 4xx, a
FailedSOPSequence) raises :class:`StoreRejected`. Messages carry status and failure-reason codes
only: never a response body, an element value or a URL (a URL may hold credentials).

Idempotency is the server's: storing the same SOPInstanceUID twice leaves one instance (Orthanc
keeps the first copy, or replaces it with ``OverwriteInstances: true``; the bytes are the same).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import requests
from pydicom.dataset import Dataset

from gateway.config import StoreConfig
from gateway.dicom.writer import encode_part10
from gateway.stores.base import StoreRejected, StoreUnavailable
from gateway.stores.http import ThreadSessions, bearer_token

log = logging.getLogger(__name__)

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
OUT_OF_RESOURCES = range(0xA700, 0xA800)  # PS3.4 C.4.2.1.4: "Refused: Out of Resources"
TRANSIENT_STATUS = frozenset({408, 425, 429})
#: the whole endpoint is missing (a wrong base URL, a server without STOW-RS): the
#: destination is misconfigured, never the instance; items wait until an operator fixes it
MISCONFIGURED_STATUS = frozenset({404, 405})


class DicomwebStore:
    """STOW-RS client for one DICOMweb root (``{url}/studies``)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_seconds: float = 30.0,
        name: str = "dicomweb",
    ) -> None:
        self.url = url.rstrip("/")
        self.name = name
        self.timeout_seconds = timeout_seconds
        self._sessions = ThreadSessions(token)

    @classmethod
    def from_config(cls, config: StoreConfig, name: str = "dicomweb") -> DicomwebStore:
        """Fail closed at start-up: no URL, or a token variable that is named but unset."""
        token = bearer_token(config, "dicomweb store")
        assert config.url is not None  # checked by bearer_token
        return cls(config.url, token=token, timeout_seconds=config.timeout_seconds, name=name)

    # -- ResearchStore -----------------------------------------------------------------------
    def put_dicom(self, ds: Dataset) -> str:
        ref = reference(ds)
        body, content_type = _multipart(_encode(ds))
        try:
            response = self._session().post(
                f"{self.url}/studies",
                data=body,
                headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                timeout=self.timeout_seconds,
            )
        except requests.Timeout as exc:
            log.warning("dicomweb store %s: timeout", self.name)
            raise StoreUnavailable("the DICOMweb store timed out") from exc
        except requests.RequestException as exc:  # connection refused/reset, DNS, TLS, ...
            log.warning("dicomweb store %s: unreachable (%s)", self.name, type(exc).__name__)
            raise StoreUnavailable("the DICOMweb store is unreachable") from exc
        _check(response, self.name)
        return ref

    def put_fhir(self, resources: list[dict[str, Any]]) -> list[str]:
        raise StoreRejected("a DICOMweb store holds no FHIR")

    def close(self) -> None:
        self._sessions.close()

    # -- internals ---------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        return self._sessions.get()


def reference(ds: Dataset) -> str:
    """``studies/<study>/series/<series>/instances/<sop>``: pseudonymised UIDs only."""
    uids = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if not value:
            raise StoreRejected(f"the instance has no {keyword}")
        uids.append(value)
    return "studies/{}/series/{}/instances/{}".format(*uids)


def _encode(ds: Dataset) -> bytes:
    try:
        return encode_part10(ds)
    except (ValueError, TypeError, AttributeError) as exc:
        raise StoreRejected("the instance cannot be encoded as a DICOM file") from exc


def _multipart(payload: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return (
        head + payload + tail,
        f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


def _check(response: requests.Response, name: str) -> None:
    status = response.status_code
    if status >= 500 or status in TRANSIENT_STATUS:
        log.warning("dicomweb store %s: HTTP %d, will retry", name, status)
        raise StoreUnavailable(f"the DICOMweb store answered HTTP {status}")
    if status in (401, 403):
        # the gateway's credentials, not the instance, are at fault: quarantining every item
        # would not help; they wait (backlog metric) until the token is fixed
        log.warning("dicomweb store %s: HTTP %d (credentials), will retry", name, status)
        raise StoreUnavailable(
            f"the DICOMweb store refused the gateway's credentials (HTTP {status})"
        )
    if status in MISCONFIGURED_STATUS:
        log.warning("dicomweb store %s: HTTP %d (no STOW-RS at the URL), will retry", name, status)
        raise StoreUnavailable(
            f"the DICOMweb store has no STOW-RS endpoint at its URL (HTTP {status})"
        )
    reasons = _failure_reasons(response)
    if not 200 <= status < 300:
        log.warning("dicomweb store %s: HTTP %d, rejected", name, status)
        raise StoreRejected(_rejection(f"HTTP {status}", reasons))
    if reasons:
        if all(code in OUT_OF_RESOURCES for code in reasons if code is not None):
            log.warning("dicomweb store %s: out of resources, will retry", name)
            raise StoreUnavailable("the DICOMweb store is out of resources")
        log.warning("dicomweb store %s: FailedSOPSequence, rejected", name)
        raise StoreRejected(_rejection(f"HTTP {status}", reasons))


def _failure_reasons(response: requests.Response) -> list[int | None]:
    """FailureReason of each FailedSOPSequence item (None when the item gives none)."""
    try:
        body = response.json()
    except ValueError:
        return []
    if isinstance(body, list):  # some servers wrap the response dataset in an array
        body = body[0] if body and isinstance(body[0], dict) else {}
    if not isinstance(body, dict):
        return []
    failed = body.get(FAILED_SOP_SEQUENCE)
    items = failed.get("Value") if isinstance(failed, dict) else None
    out: list[int | None] = []
    for item in items or []:
        code = None
        if isinstance(item, dict):
            values = (item.get(FAILURE_REASON) or {}).get("Value") or []
            if values and isinstance(values[0], int):
                code = values[0]
        out.append(code)
    return out


def _rejection(prefix: str, reasons: list[int | None]) -> str:
    codes = sorted({f"0x{code:04X}" for code in reasons if code is not None})
    detail = f"; failure reason {', '.join(codes)}" if codes else ""
    return f"the DICOMweb store rejected the instance ({prefix}{detail})"
