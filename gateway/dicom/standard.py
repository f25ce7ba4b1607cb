"""PS3.15 Annex E Table E.1-1 as shipped data (``_standard/ps3.15_e1_1.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TABLE_PATH = Path(__file__).resolve().parent / "_standard" / "ps3.15_e1_1.json"

PRIVATE_PATTERN = "(GGGG,EEEE)ODD"


@dataclass(frozen=True)
class TableRow:
    tag: str  # "(0010,0010)" or a pattern "(60XX,3000)", "(50XX,XXXX)", PRIVATE_PATTERN
    keyword: str
    name: str
    basic: str
    options: dict[str, str]

    @property
    def is_pattern(self) -> bool:
        return "X" in self.tag[1:10] or self.tag == PRIVATE_PATTERN

    @property
    def tag_int(self) -> int:
        return int(self.tag[1:5] + self.tag[6:10], 16)


@dataclass(frozen=True)
class ConfidentialityTable:
    edition: str
    rows: tuple[TableRow, ...]


@lru_cache(maxsize=1)
def load_table() -> ConfidentialityTable:
    data = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    rows = tuple(
        TableRow(r["tag"], r["keyword"], r["name"], r["basic"], dict(r["options"]))
        for r in data["rows"]
    )
    return ConfidentialityTable(data["edition"], rows)
