"""File meta information that names devices and networks: the policy Table E.1-1 leaves out.

PS3.15 Table E.1-1 lists the dataset's attributes; the File Meta Information (group 0002,
PS3.10 7.1) also carries the AE titles of the sending and receiving applications, their network
(presentation) addresses and a private block of the creating implementation. They identify
devices and sites as DeviceSerialNumber or StationName do, so they follow the profile's device
policy: removed, unless the profile retains device identity (Retain Device Identity Option, K).
The rows have the shape of Table E.1-1 rows and are resolved the same way.
"""

from __future__ import annotations

from gateway.dicom.standard import TableRow

_DEVICE = {"retain_device_identity": "K"}

FILE_META_ROWS: tuple[TableRow, ...] = tuple(
    TableRow(tag, keyword, name, "X", dict(_DEVICE))
    for tag, keyword, name in (
        ("(0002,0016)", "SourceApplicationEntityTitle", "Source Application Entity Title"),
        ("(0002,0017)", "SendingApplicationEntityTitle", "Sending Application Entity Title"),
        ("(0002,0018)", "ReceivingApplicationEntityTitle", "Receiving Application Entity Title"),
        ("(0002,0026)", "SourcePresentationAddress", "Source Presentation Address"),
        ("(0002,0027)", "SendingPresentationAddress", "Sending Presentation Address"),
        ("(0002,0028)", "ReceivingPresentationAddress", "Receiving Presentation Address"),
        ("(0002,0100)", "PrivateInformationCreatorUID", "Private Information Creator UID"),
        ("(0002,0102)", "PrivateInformation", "Private Information"),
    )
)
SOURCE = "file meta device policy (PS3.10 group 0002; not in Table E.1-1)"
WHY = "names a device or network (file meta, not in Table E.1-1)"
