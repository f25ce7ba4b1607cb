"""What the HTTP research stores (DICOMweb, FHIR REST) and the patient source share: a bearer
token from the environment (never from configuration values) and one Session per thread."""

from __future__ import annotations

import os
import threading

import requests

from gateway.config import StoreConfig
from gateway.errors import ConfigurationError, ReasonCode


def bearer_token(config: StoreConfig, what: str) -> str | None:
    """Fail closed at start-up: no URL, or a token variable that is named but unset."""
    if not config.url:
        raise ConfigurationError(ReasonCode.PROFILE_INVALID, f"a {what} needs a url")
    if not config.token_env:
        return None
    token = os.environ.get(config.token_env)
    if not token:
        raise ConfigurationError(
            ReasonCode.KEY_MISSING,
            f"the environment variable {config.token_env} named by token_env is not set",
        )
    return token


class ThreadSessions:
    """A requests.Session per thread (a Session is not shared between worker threads)."""

    def __init__(self, token: str | None) -> None:
        self._token = token
        self._local = threading.local()

    def get(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # trust_env stays on: a hospital may need HTTPS_PROXY / REQUESTS_CA_BUNDLE
            if self._token:
                session.headers["Authorization"] = f"Bearer {self._token}"
            self._local.session = session
        return session

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None
