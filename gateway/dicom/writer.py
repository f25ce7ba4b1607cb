"""Write a de-identified dataset as a DICOM Part 10 file, copying what did not change.

The header path changes a few dozen elements of an instance and keeps the rest as read.
pydicom's ``dcmwrite`` walks every element through its general encoder (and deep-copies the
file meta, and loads deferred pixel data into memory); here an element still in its raw form
is written as its header plus the bytes read, a deferred value (large pixel data) is streamed
from the source file in chunks, and only changed elements go through pydicom's encoder.

The output is byte for byte what ``pydicom.dcmwrite(fh, ds, enforce_file_format=True)``
writes (a test holds the two equal over pydicom's own test files, before and after
de-identification). Whatever this writer does not handle exactly the same way (big endian,
deflate, a change of encoding or character set that pydicom would convert, ambiguous VRs,
odd pixel data) is handed to ``dcmwrite`` whole, before anything is written.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import BinaryIO, cast

import pydicom
from pydicom import __version_info__ as PYDICOM_VERSION
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from gateway.dicom import tags as T
from gateway.dicom.reader import decode_if_mislabelled

COPY_CHUNK = 1 << 20
UNDEFINED = 0xFFFFFFFF
ITEM_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQUENCE_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
ENCAPSULATED_ITEM = b"\xfe\xff\x00\xe0"
LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
# Single string values pydicom writes as the ASCII text padded to even length (UI with NUL):
# the common case of a changed element, encoded here without pydicom's per-element set-up.
ASCII_PADDED = {
    "AE": b" ",
    "AS": b" ",
    "CS": b" ",
    "DA": b" ",
    "DT": b" ",
    "TM": b" ",
    "UI": b"\x00",
}
TEXT_PADDED = frozenset({"LO", "SH", "LT", "ST", "UT", "UC"})
META_REQUIRED = (
    T.MEDIA_STORAGE_SOP_CLASS_UID,
    T.MEDIA_STORAGE_SOP_INSTANCE_UID,
    T.TRANSFER_SYNTAX_UID,
)
META_READ_BY_DCMWRITE = (T.FILE_META_VERSION, *META_REQUIRED, T.IMPLEMENTATION_CLASS_UID)


class _Fallback(Exception):
    """This dataset is outside the fast path: let pydicom write it."""


@dataclass(frozen=True)
class _Deferred:
    """A value left on disk by the reader: ``length`` bytes at ``offset`` of ``path``."""

    path: str
    offset: int
    length: int
    mtime: float | None  # when the reader read it: a source changed since is not copied


_Chunk = bytes | _Deferred


def write_part10(fh: BinaryIO, ds: Dataset) -> None:
    """Write ``ds`` to ``fh`` as ``dcmwrite(fh, ds, enforce_file_format=True)`` would."""
    try:
        chunks = _plan(ds)
    except _Fallback:
        # a stage that changed the transfer syntax (pixel re-encoding) leaves elements raw in
        # the old encoding; dcmwrite copies raw elements as they are: decode those first
        decode_if_mislabelled(ds)
        pydicom.dcmwrite(fh, ds, enforce_file_format=True)
        return
    pending: list[bytes] = []
    for chunk in chunks:
        if isinstance(chunk, bytes):
            pending.append(chunk)
            continue
        fh.write(b"".join(pending))  # one write per run of in-memory chunks
        pending = []
        _copy_range(chunk, fh)
    fh.write(b"".join(pending))


def encode_part10(ds: Dataset) -> bytes:
    """The Part 10 bytes of ``ds`` (for stores that send a body rather than write a file)."""
    buffer = DicomBytesIO()
    write_part10(cast(BinaryIO, buffer), ds)
    return buffer.getvalue()


# -- planning: every byte decided before any is written, so a fallback starts clean ---------
def _plan(ds: Dataset) -> list[_Chunk]:
    meta = getattr(ds, "file_meta", None)
    syntax_elem = meta.get(T.TRANSFER_SYNTAX_UID) if meta is not None else None
    syntax = syntax_elem.value if syntax_elem is not None else None
    if (
        syntax is None
        or syntax.is_private
        or not syntax.is_transfer_syntax
        or not syntax.is_little_endian
        or syntax == DeflatedExplicitVRLittleEndian
    ):
        raise _Fallback
    assert meta is not None  # a transfer syntax was read from it
    if any((int(tag) >> 16) in (0, 2) for tag in ds.keys()):
        raise _Fallback  # dcmwrite refuses these: let it say so
    preamble = getattr(ds, "preamble", None)
    if preamble and len(preamble) != 128:
        raise _Fallback
    writer = _Writer(
        implicit=bool(syntax.is_implicit_VR),
        source=getattr(ds, "filename", None),
        mtime=getattr(ds, "timestamp", None),
    )
    writer.check_pixel_data(ds, bool(syntax.is_compressed))
    writer.out.append(bytes(preamble) if preamble else b"\x00" * 128)
    writer.out.append(b"DICM")
    writer.out.extend(_meta_chunks(ds, meta))
    writer.dataset(ds, "iso8859")
    return writer.out


def _meta_chunks(ds: Dataset, meta: Dataset) -> list[bytes]:
    """File meta as dcmwrite writes it: media storage UIDs follow the dataset, version and
    implementation added when missing, group length computed; always explicit VR LE."""
    elements: dict[int, DataElement | RawDataElement] = {
        int(t): meta.get_item(t, keep_deferred=True) for t in meta.keys()
    }
    if any(tag >> 16 != 2 for tag in elements):
        raise _Fallback
    for tag in META_READ_BY_DCMWRITE:  # it reads (so converts) these: their VR and padding
        if tag in elements:  # are then pydicom's, whatever the file had
            elements[tag] = meta[tag]
    for meta_tag, ds_tag in (
        (T.MEDIA_STORAGE_SOP_CLASS_UID, T.SOP_CLASS_UID),
        (T.MEDIA_STORAGE_SOP_INSTANCE_UID, T.SOP_INSTANCE_UID),
    ):
        current = elements.get(meta_tag)
        found = ds.get(ds_tag)  # converted, as dcmwrite's ds.get(keyword) does
        value = found.value if found is not None else None
        if current is None or (value and value != current.value):
            elements[meta_tag] = DataElement(meta_tag, "UI", value)
    defaults = (
        (T.FILE_META_VERSION, "OB", b"\x00\x01"),
        (T.IMPLEMENTATION_CLASS_UID, "UI", PYDICOM_IMPLEMENTATION_UID),
    )
    for tag, vr, value in defaults:
        if tag not in elements or _is_empty(elements[tag]):
            elements[tag] = DataElement(tag, vr, value)
    if T.IMPLEMENTATION_VERSION_NAME not in elements:
        name = f"PYDICOM {'.'.join(PYDICOM_VERSION)}"
        elements[T.IMPLEMENTATION_VERSION_NAME] = DataElement(
            T.IMPLEMENTATION_VERSION_NAME, "SH", name
        )
    for tag in META_REQUIRED:
        if tag not in elements or _is_empty(elements[tag]):
            raise _Fallback  # dcmwrite raises the standard's error for this
    writer = _Writer(implicit=False, source=None)
    for tag in sorted(elements):
        if tag != T.FILE_META_GROUP_LENGTH:
            writer.element(elements[tag], "iso8859")
    body = b"".join(cast(list[bytes], writer.out))
    return [struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)), body]


def _is_empty(elem: DataElement | RawDataElement) -> bool:
    """pydicom's ``is_empty`` for a file meta element, without converting a raw one."""
    if isinstance(elem, RawDataElement):
        data = elem.value or b""
        return not (data if elem.VR in ("OB", "UN") else data.strip(b" \x00"))
    return bool(elem.is_empty)


class _Writer:
    """Collects the chunks of one dataset encoding (little endian, implicit or explicit VR)."""

    def __init__(self, implicit: bool, source: object, mtime: float | None = None) -> None:
        self.implicit = implicit
        self.source = source if isinstance(source, (str, os.PathLike)) else None
        self.mtime = mtime
        self.out: list[_Chunk] = []

    def check_pixel_data(self, ds: Dataset, compressed: bool) -> None:
        """dcmwrite sets PixelData's undefined length from the syntax (encapsulated iff
        compressed); a raw value that disagrees is for dcmwrite to sort out or refuse."""
        if T.PIXEL_DATA not in ds:
            return
        elem = ds.get_item(T.PIXEL_DATA, keep_deferred=True)
        if isinstance(elem, RawDataElement):
            if (elem.length == UNDEFINED) != compressed:
                raise _Fallback
        else:
            elem.is_undefined_length = compressed

    def dataset(self, ds: Dataset, parent_encoding: str | list[str]) -> None:
        pairs = sorted(((int(tag), elem) for tag, elem in ds.items()), key=itemgetter(0))
        if any(isinstance(elem, RawDataElement) for _, elem in pairs) and (
            ds.original_encoding != (self.implicit, True)
            or ds.original_character_set != ds._character_set
        ):
            raise _Fallback  # pydicom would decode and re-encode these elements
        charset = ds.get(T.SPECIFIC_CHARACTER_SET)
        encodings = charset.value if charset is not None else parent_encoding
        for tag, elem in pairs:
            if (tag & 0xFFFF) == 0 and (tag >> 16) > 6:
                continue  # retired group lengths are not written (PS3.5 7.2)
            if isinstance(elem, RawDataElement) and elem.value is None and not elem.length:
                elem = ds[tag]  # an empty value: pydicom converts it (an explicit UN gets its VR)
            self.element(elem, encodings)

    def element(self, elem: DataElement | RawDataElement, encodings: object) -> None:
        if isinstance(elem, RawDataElement):
            self._raw(elem)
        elif elem.VR == "SQ":
            self._sequence(elem, convert_encodings(cast(str | list[str], encodings)))
        else:
            self._encoded(elem, encodings)

    def _header(self, tag: int, vr: str | None, length: int) -> bytes:
        group, element = tag >> 16, tag & 0xFFFF
        if self.implicit:
            return struct.pack("<HHI", group, element, length)
        if vr is None or len(vr) != 2:
            raise _Fallback
        if vr not in LONG_VRS and length != UNDEFINED and length > 0xFFFF:
            raise _Fallback  # dcmwrite writes it as UN, with a warning (PS3.5 6.2.2)
        if vr in LONG_VRS:
            return struct.pack("<HH2s2xI", group, element, vr.encode(), length)
        return struct.pack("<HH2sH", group, element, vr.encode(), length)

    def _raw(self, elem: RawDataElement) -> None:
        if elem.is_implicit_VR != self.implicit or not elem.is_little_endian:
            raise _Fallback
        tag = int(elem.tag)
        value = elem.value
        if value is None and elem.length not in (0, UNDEFINED):
            if self.source is None:
                raise _Fallback
            self.out.append(self._header(tag, elem.VR, elem.length))
            self.out.append(
                _Deferred(os.fspath(self.source), elem.value_tell, elem.length, self.mtime)
            )
            return
        data = bytes(value or b"")
        if elem.length == UNDEFINED:
            if tag == T.PIXEL_DATA and not data.startswith(ENCAPSULATED_ITEM):
                raise _Fallback  # dcmwrite refuses unencapsulated pixel data of undefined length
            self.out += [self._header(tag, elem.VR, UNDEFINED), data, SEQUENCE_DELIMITER]
            return
        self.out += [self._header(tag, elem.VR, len(data)), data]

    def _sequence(self, elem: DataElement, encodings: list[str]) -> None:
        start = len(self.out)
        self.out.append(b"")  # the header, once the length is known
        for item in cast(Iterable[Dataset], elem.value or []):
            self._item(item, encodings)
        if elem.is_undefined_length:
            self.out[start] = self._header(int(elem.tag), "SQ", UNDEFINED)
            self.out.append(SEQUENCE_DELIMITER)
        else:
            self.out[start] = self._header(int(elem.tag), "SQ", self._length_since(start + 1))

    def _item(self, item: Dataset, encodings: list[str]) -> None:
        start = len(self.out)
        self.out.append(b"")
        self.dataset(item, encodings)
        if getattr(item, "is_undefined_length_sequence_item", False):
            self.out[start] = struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)
            self.out.append(ITEM_DELIMITER)
        else:
            self.out[start] = struct.pack("<HHI", 0xFFFE, 0xE000, self._length_since(start + 1))

    def _length_since(self, index: int) -> int:
        total = 0
        for chunk in self.out[index:]:
            total += chunk.length if isinstance(chunk, _Deferred) else len(chunk)
        return total

    def _encoded(self, elem: DataElement, encodings: object) -> None:
        vr = elem.VR
        if vr is None or len(vr) != 2 or elem.is_buffered:
            raise _Fallback  # ambiguous VR (pydicom resolves it from the dataset), or a stream
        value = elem.value
        if value is None or value == "":
            self.out.append(self._header(int(elem.tag), vr, 0))
            return
        if type(value) is str or (vr == "UI" and isinstance(value, str)):
            pad = ASCII_PADDED.get(vr, b" " if vr in TEXT_PADDED else None)
            if pad is not None and value.isascii() and "\\" not in value:
                data = value.encode("ascii")
                if len(data) % 2:
                    data += pad
                self.out += [self._header(int(elem.tag), vr, len(data)), data]
                return
        buffer = DicomBytesIO()
        buffer.is_little_endian = True
        buffer.is_implicit_VR = self.implicit
        write_data_element(buffer, elem, cast(str | list[str], encodings))
        self.out.append(buffer.getvalue())


def _copy_range(chunk: _Deferred, fh: BinaryIO) -> None:
    """Stream a deferred value from the source file; a source changed since it was read (pydicom
    only warns) or cut short fails loudly instead of writing wrong or short data."""
    remaining = chunk.length
    with open(chunk.path, "rb") as source:
        if chunk.mtime is not None and os.fstat(source.fileno()).st_mtime != chunk.mtime:
            raise OSError("source file changed since it was read")
        source.seek(chunk.offset)
        while remaining:
            data = source.read(min(COPY_CHUNK, remaining))
            if not data:
                raise EOFError("source file ends before a deferred value does")
            fh.write(data)
            remaining -= len(data)
