"""The Flask app behind an asyncio front (gunicorn's ``asgi`` worker), so slow clients cost a
coroutine, not a thread.

With a thread per connection (gunicorn ``gthread``), four clients that trickle their headers,
or promise a body they never send, held every request thread and ``/healthz`` hung (issue 13).
Here the event loop reads each request, headers and body, and a thread runs the Flask app only
once the request is complete. The body is spooled as it arrives: in memory up to
``MEMORY_BYTES``, then in a 0600 file on the data volume (it may hold PHI), so a request costs
a few MB of memory whatever its size. A body that stops arriving is cut off (408); one larger
than ``limits.max_request_bytes`` is refused (413) without being read; a full data volume is
503 with Retry-After, as in the app.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from flask import Flask

from gateway.errors import IntakeUnavailable, ReasonCode
from gateway.intake.http.errors import operation_outcome

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MEMORY_BYTES = 1024 * 1024  # a body larger than this goes to a file on the data volume
BODY_TIMEOUT_SECONDS = 60.0  # the longest silence of a client sending its body


class WsgiBridge:
    """An ASGI application running a WSGI app in a thread pool once a request is complete."""

    def __init__(
        self,
        app: Flask,
        threads: int,
        spool_dir: Path,
        max_body_bytes: int,
        body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.extensions = app.extensions  # the server's hooks reach the service core here
        self.spool_dir = spool_dir
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="deid-http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no WebSocket here: the connection is closed unanswered
        body = self._body_file()
        try:
            size = await self._read_body(scope, receive, send, body)
            if size is None:
                return
            body.seek(0)
            environ = _environ(scope, body, size)
            loop = asyncio.get_running_loop()
            status, headers, chunks = await loop.run_in_executor(
                self.pool, _call, self.app, environ
            )
        finally:
            body.close()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"".join(chunks)})

    def _body_file(self) -> IO[bytes]:
        self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        spooled: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by caller
            max_size=MEMORY_BYTES, mode="w+b", dir=str(self.spool_dir), prefix=".body-"
        )
        return spooled

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, body: IO[bytes]
    ) -> int | None:
        """The body's size once it is all spooled; None when the request was answered here."""
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _refuse(
                scope, send, 413, ReasonCode.TOO_LARGE, "request exceeds limits.max_request_bytes"
            )
            return None
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_seconds)
            except TimeoutError:
                await _refuse(scope, send, 408, ReasonCode.USAGE, "the request body stopped")
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _refuse(
                    scope,
                    send,
                    413,
                    ReasonCode.TOO_LARGE,
                    "request exceeds limits.max_request_bytes",
                )
                return None
            if chunk:
                try:
                    body.write(chunk)
                except OSError:  # the data volume is full or failing
                    await _refuse(
                        scope,
                        send,
                        503,
                        ReasonCode.SPOOL_WRITE_FAILED,
                        "the spool cannot be written",
                    )
                    return None
            if not message.get("more_body", False):
                return size


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _environ(scope: Scope, body: IO[bytes], size: int) -> dict[str, Any]:
    """PEP 3333 from an ASGI HTTP scope; the body is complete, so its length is known."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": bytes(scope.get("query_string", b"")).decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "CONTENT_LENGTH": str(size),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for key, value in scope.get("headers", []):
        name = bytes(key).decode("latin-1").upper().replace("-", "_")
        text = bytes(value).decode("latin-1")
        if name == "CONTENT_LENGTH":
            continue  # the body's real length is set above
        target = "CONTENT_TYPE" if name == "CONTENT_TYPE" else f"HTTP_{name}"
        environ[target] = f"{environ[target]},{text}" if target in environ else text
    return environ


def _call(
    app: Flask, environ: dict[str, Any]
) -> tuple[int, list[tuple[bytes, bytes]], list[bytes]]:
    """Run the WSGI app in a pool thread; the response is collected (the service's answers
    are small: JSON, or one de-identified instance for the preview)."""
    started: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        started["status"] = int(status.split(" ", 1)[0])
        started["headers"] = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers
        ]
        return chunks.append

    result: Iterable[bytes] = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return started["status"], started["headers"], chunks


async def _refuse(scope: Scope, send: Send, status: int, reason: ReasonCode, detail: str) -> None:
    """The same answer shape as the app's error handler (OperationOutcome on FHIR paths)."""
    path = scope.get("path", "")
    if "/fhir" in path:
        document: dict[str, Any] = operation_outcome(status, reason.value, detail)
        media = b"application/fhir+json"
    else:
        document = {"error": reason.value, "detail": detail}
        media = b"application/json"
    headers = [(b"content-type", media), (b"connection", b"close")]
    if status == 503:
        headers.append((b"retry-after", str(IntakeUnavailable.retry_after_seconds).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(document).encode()})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
