"""A rate limit shared by every thread of an export, so the PACS and the EHR see at most
``requests_per_second`` however many entries are fetched at once."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import requests

from gateway.errors import ConfigurationError, ReasonCode


class RateLimiter:
    """Spaces calls ``1 / per_second`` apart (no burst: a PACS feels bursts most)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class LimitedSession(requests.Session):
    """A ``requests`` session whose every request waits for the limiter first: dicomweb-client
    pages QIDO results and streams WADO parts through one session, so each HTTP request is
    counted, not each library call."""

    def __init__(self, limiter: RateLimiter, token_env: str | None, timeout: float) -> None:
        super().__init__()
        self.limiter = limiter
        self.timeout = timeout
        if token_env:
            token = os.environ.get(token_env)
            if not token:  # fail closed: an anonymous request would only be refused later
                raise ConfigurationError(
                    ReasonCode.CONFIGURATION_INVALID,
                    f"sources: token_env names {token_env}, which is not set",
                )
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        self.limiter.wait()
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)
