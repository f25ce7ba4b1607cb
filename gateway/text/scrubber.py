"""Replace found PHI spans in a text, keeping everything else (Clean actions)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gateway.text.context import PhiContext
from gateway.text.recognizers import RecognizerRegistry, default_registry


@dataclass
class CleanResult:
    text: str
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        return bool(self.counts)


class TextScrubber:
    """Finds spans with a registry and replaces each with ``[ENTITY]``."""

    def __init__(self, registry: RecognizerRegistry | None = None) -> None:
        self.registry = registry or default_registry()

    def clean(self, text: str, context: PhiContext) -> CleanResult:
        if not text or not text.strip():
            return CleanResult(text)
        spans = self.registry.find(text, context)
        if not spans:
            return CleanResult(text)
        counts: Counter[str] = Counter()
        pieces: list[str] = []
        cursor = 0
        for span in spans:
            pieces.append(text[cursor : span.start])
            pieces.append(f"[{span.entity}]")
            counts[span.entity] += 1
            cursor = span.end
        pieces.append(text[cursor:])
        return CleanResult("".join(pieces), counts)
