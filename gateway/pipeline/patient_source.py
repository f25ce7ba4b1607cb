"""Ask the hospital's own FHIR server for a Patient the identity index does not know yet."""

from __future__ import annotations

from typing import Any

import requests

from gateway.config import StoreConfig
from gateway.stores.base import StoreUnavailable
from gateway.stores.http import bearer_token


def fetch_patient(source: StoreConfig, logical_id: str) -> dict[str, Any] | None:
    """The Patient resource, None when the server says it does not exist. A server that
    cannot be reached raises StoreUnavailable: the item is retried, not guessed."""
    headers = {"Accept": "application/fhir+json"}
    token = bearer_token(source, "patient source")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = f"{str(source.url).rstrip('/')}/Patient/{logical_id}"
    try:
        response = requests.get(url, headers=headers, timeout=source.timeout_seconds)
    except requests.RequestException as exc:
        raise StoreUnavailable("patient source unreachable") from exc
    if response.status_code in (404, 410):
        return None
    if response.status_code >= 500:
        raise StoreUnavailable(f"patient source answered {response.status_code}")
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and body.get("resourceType") == "Patient" else None
