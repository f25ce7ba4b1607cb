"""Replace found PHI spans in a text, keeping everything else (Clean actions)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gateway.text.cache import LruCache
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
    """Finds spans with a registry and replaces each with ``[ENTITY]``.

    With ``cache_size``, results are remembered per ``(text, patient context)``, exactly (the
    context's frozen terms are part of the key): the descriptions of a series are cleaned once.
    """

    def __init__(self, registry: RecognizerRegistry | None = None, *, cache_size: int = 0) -> None:
        self.registry = registry or default_registry()
        self.cache: LruCache[tuple[str, tuple[tuple[str, int], ...]]] | None = (
            LruCache(cache_size) if cache_size > 0 else None
        )

    def clean(self, text: str, context: PhiContext) -> CleanResult:
        if not text or not text.strip():
            return CleanResult(text)
        if self.cache is None:
            return self._clean(text, context)
        key = (text, context.frozen())
        cached = self.cache.get(key)
        if cached is None:
            result = self._clean(text, context)
            self.cache.put(key, (result.text, tuple(result.counts.items())))
            return result
        return CleanResult(cached[0], Counter(dict(cached[1])))

    def _clean(self, text: str, context: PhiContext) -> CleanResult:
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
