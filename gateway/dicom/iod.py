"""Attribute types of every IOD (PS3.3), as shipped data (``_standard/iod_attribute_types.json``).

PS3.15's compound codes (X/Z, Z/D, X/D, X/Z/D, X/Z/U*) are decided by the attribute's type in the
instance's IOD: this module answers "what type is this attribute here?". The table is generated
by ``scripts/build_iod_types.py`` from the standard's tables; nothing else is read at run time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path

TYPES_PATH = Path(__file__).resolve().parent / "_standard" / "iod_attribute_types.json"


class AttributeType(str, Enum):
    """PS3.5 7.4 data element types, strictest first."""

    TYPE_1 = "1"
    TYPE_1C = "1C"
    TYPE_2 = "2"
    TYPE_2C = "2C"
    TYPE_3 = "3"


@dataclass(frozen=True)
class IodTypes:
    """One IOD: its top-level attributes' types, plus the nested (in-sequence) types."""

    iod: str
    top: dict[int, AttributeType]
    nested: dict[tuple[int, int], AttributeType]

    def type_of(self, tag: int, parent: int | None) -> AttributeType | None:
        """The type of ``tag`` at the top level (``parent`` None) or directly inside the
        sequence ``parent``; None when the IOD (or the macro) does not define it there."""
        if parent is None:
            return self.top.get(tag)
        return self.nested.get((parent, tag))


@dataclass(frozen=True)
class IodTable:
    """IODs are decoded from the table the first time a SOP class asks for them: a run reads
    a few IOD families, not all 175 (which cost about 50 ms at start-up)."""

    edition: str
    sop_classes: dict[str, str]  # SOP Class UID -> IOD id
    grouped: dict[str, dict[str, str]]  # IOD id -> type -> space-separated tags, as stored
    nested: dict[tuple[int, int], AttributeType]
    decoded: dict[str, IodTypes]

    @property
    def iods(self) -> dict[str, IodTypes]:
        """Every IOD, decoded (for tools and tests)."""
        return {iod: self.iod(iod) for iod in self.grouped}

    def iod(self, iod: str) -> IodTypes:
        found = self.decoded.get(iod)
        if found is None:
            found = self.decoded[iod] = IodTypes(iod, _tags(self.grouped[iod]), self.nested)
        return found

    def for_sop_class(self, sop_class_uid: str) -> IodTypes | None:
        """The IOD of a SOP class; None for a SOP class the table does not know."""
        iod = self.sop_classes.get(sop_class_uid.strip().rstrip("\0"))
        return None if iod is None else self.iod(iod)


def _tags(grouped: dict[str, str]) -> dict[int, AttributeType]:
    return {
        int(tag, 16): AttributeType(kind) for kind, tags in grouped.items() for tag in tags.split()
    }


@lru_cache(maxsize=1)
def load_iod_table() -> IodTable:
    data = json.loads(TYPES_PATH.read_text(encoding="utf-8"))
    nested = {
        (int(pair[:8], 16), int(pair[9:], 16)): AttributeType(kind)
        for kind, pairs in data["nested"].items()
        for pair in pairs.split()
    }
    return IodTable(data["edition"], dict(data["sop_classes"]), dict(data["iods"]), nested, {})
