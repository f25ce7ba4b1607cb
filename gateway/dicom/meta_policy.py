"""File meta information that names devices and networks: the policy Table E.1-1 leaves out.

PS3.15 Table E.1-1 lists the dataset's attributes; the File Meta Information (group 0002,
PS3.10 7.1) also carries the AE titles of the sending and receiving applications, their network
(presentation) addresses and a private block of the creating implementation. They identify
devices and sites as DeviceSerialNumber or StationName do, so they follow the profile's device
policy: removed, unless the profile retains device identity (Retain Device Identity Option, K).
The Source AE Title names the AE that wrote the file; the output file is the gateway's, so the
input's is always removed. The rows have the shape of Table E.1-1 rows and are resolved the
same way.
"""

from __future__ import annotations

from pydicom.datadict import dictionary_description, tag_for_keyword

from gateway.dicom.standard import TableRow

_DEVICE = {"retain_device_identity": "K"}
# keyword -> options that keep it (the Basic Profile code is X for all)
_ROWS: dict[str, dict[str, str]] = {
    "SourceApplicationEntityTitle": {},  # the AE that wrote the file: the output is the gateway's
    "SendingApplicationEntityTitle": _DEVICE,
    "ReceivingApplicationEntityTitle": _DEVICE,
    "SourcePresentationAddress": _DEVICE,
    "SendingPresentationAddress": _DEVICE,
    "ReceivingPresentationAddress": _DEVICE,
    "PrivateInformationCreatorUID": _DEVICE,
    "PrivateInformation": _DEVICE,
}


def _row(keyword: str, options: dict[str, str]) -> TableRow:
    tag = int(tag_for_keyword(keyword) or 0)
    name = dictionary_description(tag)
    return TableRow(f"({tag >> 16:04X},{tag & 0xFFFF:04X})", keyword, name, "X", dict(options))


FILE_META_ROWS: tuple[TableRow, ...] = tuple(_row(k, o) for k, o in _ROWS.items())
SOURCE = "file meta device policy (PS3.10 group 0002; not in Table E.1-1)"
WHY = "names a device or network (file meta, not in Table E.1-1)"
