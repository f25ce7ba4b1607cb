"""What an intake hands the runner: the bytes of one DICOM instance or one FHIR document, on
disk or in memory, with a label for reports. Nothing in it says which door it came through."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path


class PayloadKind(str, enum.Enum):
    """What the payload is, so the runner picks its stages. A *result* is what a research
    partner returned, to be mapped back to the clinic (the other direction of the pipeline)."""

    DICOM = "dicom"
    FHIR = "fhir"
    DICOM_RESULT = "dicom-result"
    FHIR_RESULT = "fhir-result"

    @classmethod
    def of(cls, kind: str, result: bool = False) -> PayloadKind:
        """The kind of a job's payloads (``dicom``/``fhir``), as a returned result or not."""
        return cls(f"{kind}-result" if result else kind)

    @property
    def standard(self) -> str:
        """``dicom`` or ``fhir``, result or not."""
        return self.value.split("-")[0]


@dataclass(frozen=True)
class Payload:
    """``source`` names the payload in reports (an input file, ``file:line``, an item id);
    ``name`` is the file name the quarantine gives a copy. Exactly one of ``path``/``data``."""

    kind: PayloadKind
    source: str
    path: Path | None = None
    data: bytes | None = None
    name: str = "payload"

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("a payload is a path or bytes, not both or neither")

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def sha256(self) -> str:
        sha = hashlib.sha256()
        if self.data is not None:
            sha.update(self.data)
            return sha.hexdigest()
        assert self.path is not None
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        return sha.hexdigest()
