"""The streaming multipart/related parser: parts split only on CRLF + "--" + boundary followed
by "--" or a line end (RFC 2046 5.1.1), at any chunk size, and bad bodies refused with a reason."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gateway.errors import RequestRefused
from gateway.intake.http import multipart

BOUNDARY = "XyZ"
CT = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
TRICKY = [
    b"plain",
    b"",
    f"--{BOUNDARY}".encode(),  # the boundary string with no CRLF before it
    f"a\r\n--{BOUNDARY}x\r\nb".encode(),  # after a CRLF but not ending a line
    f"a\r\n--{BOUNDARY} \tb".encode(),  # padding, then data: not a line end
    b"\r\n\r\n" * 3,
    bytes(range(256)) * 50,
]


def body(parts: list[bytes], preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = preamble + (b"\r\n" if preamble else b"")
    for part in parts:
        out += f"--{BOUNDARY}  \r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    return out + f"--{BOUNDARY}--".encode() + epilogue


@pytest.mark.parametrize("chunk", [1, 2, 5, 7, 64, 256 * 1024])
@pytest.mark.parametrize("preamble", [b"", b"ignored preamble"])
def test_parts_are_split_only_on_delimiter_lines(
    chunk: int, preamble: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(multipart, "CHUNK", chunk)
    folder = tmp_path / f"in-{chunk}-{len(preamble)}"
    folder.mkdir()
    root, parts = multipart.parse_related(CT, io.BytesIO(body(TRICKY, preamble, b"\r\nepi")), folder)
    assert root == "application/dicom"
    assert [p.body for p in parts] == TRICKY
    assert [p.size for p in parts] == [len(t) for t in TRICKY]
    assert all((p.path.stat().st_mode & 0o777) == 0o600 for p in parts)


@pytest.mark.parametrize(
    ("content_type", "data", "status"),
    [
        ("application/dicom", b"x", 415),
        ('multipart/related; type="application/dicom"', b"x", 400),  # no boundary
        (CT, b"no delimiter at all", 400),
        (CT, f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nunclosed".encode(), 400),
        (CT, f"--{BOUNDARY}\r\nContent-Type: application/dicom".encode(), 400),  # no blank line
        (CT, f"--{BOUNDARY}--\r\n".encode(), 400),  # closed before any part
        (CT, f"--{BOUNDARY}junk\r\n".encode(), 400),
    ],
)
def test_bad_bodies_are_refused(content_type: str, data: bytes, status: int, tmp_path: Path) -> None:
    with pytest.raises(RequestRefused) as info:
        multipart.parse_related(content_type, io.BytesIO(data), tmp_path)
    assert info.value.status == status
