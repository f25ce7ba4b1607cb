"""Least-recently-used caches for the text engine: descriptions repeat across a series.

Two levels, both exact (no hash collisions can hand one patient's result to another):

* :class:`CachedRecognizer`: spans of a recognizer that ignores the patient context (the NLP
  model), keyed by the text alone, so "AX T2 FLAIR" is analysed once per process, whoever's.
* :class:`LruCache`: any value keyed by a tuple, e.g. a cleaned text keyed by
  ``(text, PhiContext.frozen())`` (:class:`gateway.text.scrubber.TextScrubber`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from gateway.text.context import PhiContext
from gateway.text.recognizers import Recognizer
from gateway.text.spans import Span

V = TypeVar("V")
DEFAULT_SIZE = 4096


class LruCache(Generic[V]):
    """A bounded, thread-safe mapping that forgets the least recently used entry first."""

    def __init__(self, maxsize: int = DEFAULT_SIZE) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class CachedRecognizer:
    """A context-free recognizer's spans, remembered per text. Only for recognizers whose
    result does not depend on the patient (NLP models, not the deny-list)."""

    def __init__(self, inner: Recognizer, maxsize: int = DEFAULT_SIZE) -> None:
        self.inner = inner
        self.name = inner.name
        self.entities = inner.entities
        self.masked: bool = getattr(inner, "masked", False)  # the registry masks for the inner
        self.cache: LruCache[tuple[Span, ...]] = LruCache(maxsize)

    def is_available(self) -> bool:
        return self.inner.is_available()

    def missing_dependency(self) -> str | None:
        return self.inner.missing_dependency()

    def find(self, text: str, context: PhiContext) -> list[Span]:
        cached = self.cache.get(text)
        if cached is None:
            cached = tuple(self.inner.find(text, context))
            self.cache.put(text, cached)
        return list(cached)
