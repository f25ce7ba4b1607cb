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


PLACEHOLDER = "[REDACTED]"


class MaskedText:
    """A text with found spans replaced by one placeholder, and the way back to the original's
    offsets. A model given the masked text sees the same text for every patient whose own
    identifiers are the only difference ("CT for [REDACTED] MRN [REDACTED]"), so its result,
    cached per text, is shared across patients."""

    def __init__(self, text: str, spans: list[Span], placeholder: str = PLACEHOLDER) -> None:
        pieces: list[str] = []
        self._segments: list[tuple[int, int, int, int, bool]] = []  # masked, original, kept
        cursor = masked = 0
        for span in merge_spans(spans):
            kept = text[cursor : span.start]
            self._segments.append((masked, masked + len(kept), cursor, span.start, True))
            masked += len(kept)
            self._segments.append((masked, masked + len(placeholder), span.start, span.end, False))
            masked += len(placeholder)
            pieces += [kept, placeholder]
            cursor = span.end
        rest = text[cursor:]
        self._segments.append((masked, masked + len(rest), cursor, len(text), True))
        self.text = "".join([*pieces, rest])

    def original(self, span: Span) -> Span:
        """The span in the original text; one touching a placeholder covers what it hides."""
        return Span(
            self._position(span.start, True),
            self._position(span.end, False),
            span.entity,
            span.score,
        )

    def _position(self, offset: int, start: bool) -> int:
        for m_start, m_end, o_start, o_end, kept in self._segments:
            inside = m_start <= offset < m_end if start else m_start < offset <= m_end
            if inside:
                return o_start + (offset - m_start) if kept else (o_start if start else o_end)
        return self._segments[-1][3] if not start else self._segments[0][2]
