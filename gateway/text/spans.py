"""A found piece of PHI in a text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    entity: str
    score: float = 1.0


def merge_spans(spans: list[Span]) -> list[Span]:
    """Union of overlapping spans; the earlier/longer entity label wins."""
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if merged and span.start <= merged[-1].end:
            last = merged[-1]
            if span.end > last.end:
                merged[-1] = Span(last.start, span.end, last.entity, max(last.score, span.score))
        else:
            merged.append(span)
    return merged
