"""A FHIR REST research store: de-identified resources sent as transaction Bundles.

Every entry is ``PUT Type/id`` (an update with the pseudonymised logical id), so sending the
same resources twice leaves one copy of each: forwarding is idempotent, and a retry after a
partial failure converges. Each entry carries ``fullUrl = <base>/Type/id``.

References must resolve on the server. Bundle-local references (``urn:uuid:`` / ``urn:oid:``)
mean nothing once the Bundle's fullUrls are gone, so :meth:`FhirRestStore.put_fhir` refuses a
delivery that still holds one (:class:`StoreRejected`) rather than store a dangling reference;
:func:`flatten_bundle` turns a de-identified Bundle into resources whose bundle-local references
are literal ``Type/id`` references, which is what the store should be given.

Large deliveries are cut into transactions of at most ``max_entries`` entries (servers cap
transaction size; Medplum allows 50 updates), ordered so that a referenced resource is sent no
later than the resources that reference it. A 413 answer halves the transaction.

What can be retried (connection refused, timeout, 5xx, 408, 425, 429, and 401/403 — the
gateway's credentials, not the data, are at fault) raises :class:`StoreUnavailable`; what the
server refuses for good (other 4xx, an entry answered with a non-2xx status) raises
:class:`StoreRejected`. Messages and logs carry HTTP status, OperationOutcome issue codes, entry
positions and resource types only: never a response body, a diagnostics text or an element
value (the server may echo data), nor a URL (a URL may hold credentials).
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import requests
from pydicom.dataset import Dataset

from gateway.config import StoreConfig
from gateway.stores.base import StoreRejected, StoreUnavailable
from gateway.stores.http import ThreadSessions, bearer_token

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
TRANSIENT_STATUS = frozenset({408, 425, 429})
CREDENTIAL_STATUS = frozenset({401, 403})
#: the whole base is missing (a wrong URL): the destination is misconfigured, never the data
MISCONFIGURED_STATUS = frozenset({404, 405})
DEFAULT_MAX_ENTRIES = 50
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_LITERAL = re.compile(
    r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)
_BUNDLE_LOCAL = ("urn:uuid:", "urn:oid:")
_UUID = re.compile(
    r"^urn:uuid:([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
)


class FhirRestStore:
    """FHIR REST client for one server base (``POST {url}`` with transaction Bundles)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_seconds: float = 30.0,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        name: str = "fhir",
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.url = url.rstrip("/")
        self.name = name
        self.timeout_seconds = timeout_seconds
        self.max_entries = max_entries
        self._sessions = ThreadSessions(token)

    @classmethod
    def from_config(cls, config: StoreConfig, name: str = "fhir") -> FhirRestStore:
        """Fail closed at start-up: no URL, or a token variable that is named but unset."""
        token = bearer_token(config, "fhir store")
        assert config.url is not None  # checked by bearer_token
        return cls(config.url, token=token, timeout_seconds=config.timeout_seconds, name=name)

    # -- ResearchStore -----------------------------------------------------------------------
    def put_dicom(self, ds: Dataset) -> str:
        raise StoreRejected("a FHIR REST store holds no DICOM instances")

    def put_fhir(self, resources: list[dict[str, Any]]) -> list[str]:
        """PUT every resource by ``Type/id`` in transaction Bundles; returns the references."""
        by_ref = _by_reference(resources)
        if not by_ref:
            return []
        _check_references(by_ref)
        ordered = _referenced_first(by_ref)
        for start in range(0, len(ordered), self.max_entries):
            self._transaction(
                [(ref, by_ref[ref]) for ref in ordered[start : start + self.max_entries]]
            )
        log.info("fhir store %s: %d resource(s) stored", self.name, len(ordered))
        return ordered

    def close(self) -> None:
        self._sessions.close()

    # -- internals ---------------------------------------------------------------------------
    def _transaction(self, chunk: list[tuple[str, dict[str, Any]]]) -> None:
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"{self.url}/{ref}",
                    "resource": resource,
                    "request": {"method": "PUT", "url": ref},
                }
                for ref, resource in chunk
            ],
        }
        try:
            response = self._session().post(
                self.url,
                data=json.dumps(bundle, separators=(",", ":")).encode(),
                timeout=self.timeout_seconds,
                headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            )
        except requests.Timeout as exc:
            log.warning("fhir store %s: timeout", self.name)
            raise StoreUnavailable("the FHIR store timed out") from exc
        except requests.RequestException as exc:  # connection refused/reset, DNS, TLS, ...
            log.warning("fhir store %s: unreachable (%s)", self.name, type(exc).__name__)
            raise StoreUnavailable("the FHIR store is unreachable") from exc
        if response.status_code == 413 and len(chunk) > 1:
            log.info(
                "fhir store %s: HTTP 413, splitting a transaction of %d", self.name, len(chunk)
            )
            half = len(chunk) // 2
            self._transaction(chunk[:half])
            self._transaction(chunk[half:])
            return
        _check(response, [ref for ref, _ in chunk], self.name)

    def _session(self) -> requests.Session:
        return self._sessions.get()


# -- preparing a delivery ------------------------------------------------------------------------
def flatten_bundle(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of a (de-identified) Bundle, ready for a REST store: every reference that
    points at an entry's fullUrl becomes the literal ``Type/id`` of that entry, and a resource
    without an id whose fullUrl is a ``urn:uuid:`` gets that UUID as its id (deterministic, so
    sending it again updates the same resource). A resource that is not a Bundle is returned
    alone. The input is not modified."""
    if bundle.get("resourceType") != "Bundle":
        return [copy.deepcopy(bundle)]
    resources: list[dict[str, Any]] = []
    targets: dict[str, str] = {}
    for entry in bundle.get("entry") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        resource = copy.deepcopy(entry["resource"])
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str):
            match = _UUID.match(full_url)
            if "id" not in resource and match:
                resource["id"] = match.group(1).lower()
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if isinstance(rtype, str) and isinstance(rid, str):
                targets[full_url] = f"{rtype}/{rid}"
        resources.append(resource)
    for resource in resources:
        for holder in _references(resource):
            literal = targets.get(holder["reference"])
            if literal is not None:
                holder["reference"] = literal
    return resources


def _by_reference(resources: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``Type/id`` -> resource, in delivery order; the same Type/id twice: the last one wins
    (as two PUTs in a row would)."""
    out: dict[str, dict[str, Any]] = {}
    for position, resource in enumerate(resources):
        if not isinstance(resource, dict):
            raise StoreRejected(f"item {position} of the delivery is not a resource")
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(rtype, str) or not _TYPE.match(rtype):
            raise StoreRejected(f"item {position} of the delivery has no valid resourceType")
        if not isinstance(rid, str) or not _ID.match(rid):
            raise StoreRejected(f"a {rtype} resource has no valid logical id (PUT needs one)")
        ref = f"{rtype}/{rid}"
        out.pop(ref, None)
        out[ref] = resource
    return out


def _references(obj: Any) -> Iterator[dict[str, Any]]:
    """Every object holding a string ``reference`` (a Reference), contained resources included."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("reference"), str):
                yield item
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))


def _check_references(by_ref: dict[str, dict[str, Any]]) -> None:
    for ref, resource in by_ref.items():
        for holder in _references(resource):
            if holder["reference"].startswith(_BUNDLE_LOCAL):
                rtype = ref.split("/", 1)[0]
                raise StoreRejected(
                    f"a {rtype} resource holds a bundle-local (urn:uuid/urn:oid) reference that "
                    "cannot resolve on the server; deliver literal Type/id references "
                    "(gateway.stores.fhir_rest.flatten_bundle)"
                )


def _referenced_first(by_ref: dict[str, dict[str, Any]]) -> list[str]:
    """Delivery order, except that a resource comes after the resources of the delivery it
    references (depth-first; a cycle keeps delivery order)."""
    edges: dict[str, list[str]] = {}
    for ref, resource in by_ref.items():
        targets = []
        for holder in _references(resource):
            match = _LITERAL.match(holder["reference"])
            if match:
                target = f"{match.group(1)}/{match.group(2)}"
                if target in by_ref and target != ref:
                    targets.append(target)
        edges[ref] = targets
    order: list[str] = []
    state: dict[str, int] = {}  # 1: in progress, 2: placed
    for root in by_ref:
        if state.get(root):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(edges[root]))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(edges[child])))
    return order


# -- reading the answer --------------------------------------------------------------------------
def _check(response: requests.Response, refs: list[str], name: str) -> None:
    status = response.status_code
    if status >= 500 or status in TRANSIENT_STATUS:
        log.warning("fhir store %s: HTTP %d, will retry", name, status)
        raise StoreUnavailable(f"the FHIR store answered HTTP {status}")
    if status in CREDENTIAL_STATUS:
        # the gateway's credentials, not the data, are at fault: quarantining every item would
        # not help; they wait (backlog metric) until the token is fixed
        log.warning("fhir store %s: HTTP %d (credentials), will retry", name, status)
        raise StoreUnavailable(f"the FHIR store refused the gateway's credentials (HTTP {status})")
    if status in MISCONFIGURED_STATUS:
        log.warning("fhir store %s: HTTP %d (no FHIR base at the URL), will retry", name, status)
        raise StoreUnavailable(
            f"the FHIR store has no transaction endpoint at its URL (HTTP {status})"
        )
    body = _json(response)
    if not 200 <= status < 300:
        codes = _issue_codes(body)
        log.warning("fhir store %s: HTTP %d (%s), rejected", name, status, ",".join(codes) or "-")
        raise StoreRejected(_rejection(f"HTTP {status}", codes))
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        # a 2xx that is not a FHIR answer: a proxy page or a wrong URL; fixable by an operator
        log.warning("fhir store %s: HTTP %d without a response Bundle, will retry", name, status)
        raise StoreUnavailable("the FHIR store's answer is not a transaction-response Bundle")
    entries = body.get("entry") or []
    if len(entries) != len(refs):
        log.warning("fhir store %s: %d answers for %d entries", name, len(entries), len(refs))
        raise StoreUnavailable("the FHIR store's answer does not match the transaction")
    for position, (entry, ref) in enumerate(zip(entries, refs)):
        answer = entry.get("response") if isinstance(entry, dict) else None
        code = _entry_status(answer)
        if code is not None and 200 <= code < 300:
            continue
        rtype = ref.split("/", 1)[0]
        log.warning("fhir store %s: entry %d (%s) answered %s", name, position, rtype, code)
        if code is None:
            raise StoreUnavailable("the FHIR store's answer has an entry without a status")
        if code >= 500 or code in TRANSIENT_STATUS:
            raise StoreUnavailable(f"the FHIR store answered {code} for an entry")
        codes = _issue_codes(answer.get("outcome") if isinstance(answer, dict) else None)
        raise StoreRejected(_rejection(f"entry {position} ({rtype}) status {code}", codes))


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _entry_status(answer: Any) -> int | None:
    """``Bundle.entry.response.status``: "201", "201 Created" -> 201; None when absent."""
    if not isinstance(answer, dict) or not isinstance(answer.get("status"), str):
        return None
    head = answer["status"].strip().split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def _issue_codes(outcome: Any) -> list[str]:
    """The ``OperationOutcome.issue.code`` values: a closed FHIR value set, never data."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return []
    codes = []
    for issue in outcome.get("issue") or []:
        code = issue.get("code") if isinstance(issue, dict) else None
        if (
            isinstance(code, str)
            and re.fullmatch(r"[a-z][a-z\-]{0,40}", code)
            and code not in codes
        ):
            codes.append(code)
    return codes


def _rejection(prefix: str, codes: list[str]) -> str:
    detail = f"; issue {', '.join(codes)}" if codes else ""
    return f"the FHIR store rejected the transaction ({prefix}{detail})"
