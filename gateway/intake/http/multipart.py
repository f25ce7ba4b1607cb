"""multipart/related (RFC 2387) as DICOMweb STOW-RS sends it, streamed to files.

A part's body goes to a file as it arrives, so that a request costs its largest chunk in
memory, not its size (a 200 MB study is 200 MB on disk, a few hundred KB in memory). Parts
are delimited as RFC 2046 5.1.1 says: CRLF, ``--``, the boundary; the boundary string
anywhere else (inside a value of an instance) is data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gateway.errors import ReasonCode
from gateway.intake.http.errors import ApiError

CHUNK = 256 * 1024
MAX_HEAD_BYTES = 16 * 1024  # the headers of one part; far more than any STOW client sends
MAX_PARTS = 10_000


@dataclass(frozen=True)
class Part:
    content_type: str
    path: Path
    size: int

    def head(self, count: int) -> bytes:
        with open(self.path, "rb") as fh:
            return fh.read(count)

    @property
    def body(self) -> bytes:
        return self.path.read_bytes()


def _params(header: str) -> tuple[str, dict[str, str]]:
    pieces = [p.strip() for p in header.split(";")]
    params = {}
    for piece in pieces[1:]:
        if "=" in piece:
            key, _, value = piece.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
    return pieces[0].lower(), params


def _refuse(detail: str) -> ApiError:
    return ApiError(400, ReasonCode.BAD_MULTIPART, detail)


class _Reader:
    """A byte stream read in chunks, with a small look-ahead buffer."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.buffer = b"\r\n"  # so that a delimiter at the very start matches CRLF--boundary
        self.eof = False

    def fill(self, at_least: int) -> bool:
        while len(self.buffer) < at_least and not self.eof:
            chunk = self.stream.read(CHUNK)
            if not chunk:
                self.eof = True
            else:
                self.buffer += chunk
        return len(self.buffer) >= at_least

    def skip_to(self, delimiter: bytes) -> bool:
        """Discard up to and including ``delimiter`` (the preamble)."""
        while True:
            found = self.buffer.find(delimiter)
            if found >= 0:
                self.buffer = self.buffer[found + len(delimiter) :]
                return True
            if self.eof:
                return False
            self.buffer = self.buffer[-(len(delimiter) - 1) :]
            self.fill(len(self.buffer) + 1)

    def _delimiter_at(self, found: int, delimiter: bytes) -> bool:
        """Is the match at ``found`` a delimiter line (``--`` or padding + CRLF after it)? The
        boundary string followed by anything else is data (RFC 2046 5.1.1)."""
        after = found + len(delimiter)
        while True:
            self.fill(after + 2)
            tail = self.buffer[after:]
            if tail.startswith(b"--"):
                return True
            rest = tail.lstrip(b" \t")
            if rest.startswith(b"\r\n"):
                return True
            if rest not in (b"", b"\r") or self.eof or len(tail) > MAX_HEAD_BYTES:
                return False
            self.fill(len(self.buffer) + 1)  # only padding so far: look further

    def copy_to(self, delimiter: bytes, out: IO[bytes]) -> int:
        """Write everything before the next delimiter line to ``out``; consume the delimiter."""
        written = 0
        keep = len(delimiter) + 1  # a match needs two bytes after it to be judged
        start = 0
        while True:
            found = self.buffer.find(delimiter, start)
            if found >= 0:
                if self._delimiter_at(found, delimiter):
                    out.write(self.buffer[:found])
                    self.buffer = self.buffer[found + len(delimiter) :]
                    return written + found
                start = found + 1
                continue
            if self.eof:
                raise _refuse("a part is not closed by the boundary")
            if len(self.buffer) > keep:
                cut = len(self.buffer) - keep
                out.write(self.buffer[:cut])
                written += cut
                self.buffer = self.buffer[cut:]
                start = 0
            self.fill(len(self.buffer) + 1)

    def line_end(self) -> bool:
        """After a delimiter: ``--`` closes the body; otherwise padding and CRLF follow."""
        self.fill(2)
        if self.buffer.startswith(b"--"):
            return True
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                if self.buffer[:end].strip(b" \t"):
                    raise _refuse("text after a boundary delimiter")
                self.buffer = self.buffer[end + 2 :]
                return False
            if self.eof or len(self.buffer) > MAX_HEAD_BYTES:
                raise _refuse("a boundary delimiter is not followed by CRLF")
            self.fill(len(self.buffer) + 1)

    def headers(self) -> dict[str, str]:
        while True:
            if self.buffer.startswith(b"\r\n"):  # a part without headers
                self.buffer = self.buffer[2:]
                return {}
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
                break
            if self.eof:
                raise _refuse("a part has no header/body separator")
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise _refuse("the headers of a part are too long")
            self.fill(len(self.buffer) + 1)
        out = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                key, _, value = line.partition(":")
                out[key.strip().lower()] = value.strip()
        return out


def _private_file(folder: Path, number: int) -> IO[bytes]:
    fd = os.open(folder / f"part-{number:05d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def iter_related(content_type: str, stream: IO[bytes], folder: Path) -> Iterator[Part]:
    """The parts of a multipart/related body, each written to a 0600 file in ``folder``."""
    _, params = _params(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise _refuse("multipart/related without a boundary parameter")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    reader = _Reader(stream)
    if not reader.skip_to(delimiter):
        raise _refuse("no parts found for the declared boundary")
    default_type = params.get("type", "application/dicom")
    for number in range(MAX_PARTS + 1):
        if reader.line_end():
            if number == 0:
                raise _refuse("no parts found for the declared boundary")
            return
        if number == MAX_PARTS:
            raise ApiError(413, ReasonCode.TOO_LARGE, "too many parts in one request")
        headers = reader.headers()
        path = folder / f"part-{number:05d}"
        with _private_file(folder, number) as out:
            size = reader.copy_to(delimiter, out)
            out.flush()
            os.fsync(out.fileno())
        part_type = _params(headers.get("content-type", default_type))[0]
        yield Part(part_type, path, size)


def parse_related(content_type: str, stream: IO[bytes], folder: Path) -> tuple[str, list[Part]]:
    """(declared root type, parts). Raises ApiError(400/413/415) with a precise reason."""
    media, params = _params(content_type)
    if media != "multipart/related":
        raise ApiError(
            415,
            ReasonCode.UNSUPPORTED_MEDIA_TYPE,
            'STOW-RS needs multipart/related; type="application/dicom"',
        )
    return params.get("type", "").lower(), list(iter_related(content_type, stream, folder))
