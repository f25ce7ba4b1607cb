"""Value objects of the pixel stage: boxes, OCR words, the report."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TextMode(str, Enum):
    """What burned-in text is redacted (the profile's ``dicom.pixels.mode``)."""

    SENSITIVE_ONLY = "sensitive-only"
    ALL_TEXT = "all-text"


class Examination(str, Enum):
    """How an instance is examined, by the profile's examine rule."""

    OCR = "ocr"  # read by OCR whatever its pixels look like
    TRIAGE = "triage"  # triaged first; read by OCR only where text is likely
    NONE = "none"  # not examined (no Clean Pixel Data claim)


class Triage(str, Enum):
    """What the text-presence triage said about an instance."""

    NOT_RUN = "not-run"  # read by OCR without triage
    NO_TEXT = "no-text"  # examined: no frame likely holds text, OCR not run
    TEXT_LIKELY = "text-likely"  # a frame likely holds text (or a known region applies): OCR


class BoxSource(str, Enum):
    """Why a box is redacted."""

    OCR = "ocr"
    DEID_FILTER = "deid-filter"
    ULTRASOUND_REGIONS = "ultrasound-regions"
    PROFILE_REGION = "profile-region"


@dataclass(frozen=True, order=True)
class Box:
    """A pixel rectangle, half-open: columns ``x0 <= x < x1``, rows ``y0 <= y < y1``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)

    def clip(self, columns: int, rows: int) -> Box | None:
        box = Box(max(0, self.x0), max(0, self.y0), min(columns, self.x1), min(rows, self.y1))
        return box if box.area > 0 else None

    def pad(self, dx: int, dy: int) -> Box:
        return Box(self.x0 - dx, self.y0 - dy, self.x1 + dx, self.y1 + dy)

    def shift(self, dx: int, dy: int) -> Box:
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)

    def scale(self, factor: float) -> Box:
        """From a rendering scaled by ``factor`` back to pixel coordinates (rounded outwards)."""
        return Box(
            int(self.x0 // factor),
            int(self.y0 // factor),
            int(-(-self.x1 // factor)),
            int(-(-self.y1 // factor)),
        )


@dataclass(frozen=True)
class Word:
    """One word read by OCR, in rendering coordinates."""

    text: str
    box: Box
    confidence: float


@dataclass(frozen=True)
class TextSegment:
    """Words on one line, close enough to be read together (``DOE JOHN``, ``DOB: 1/2/1950``)."""

    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def box(self) -> Box:
        return Box(
            min(w.box.x0 for w in self.words),
            min(w.box.y0 for w in self.words),
            max(w.box.x1 for w in self.words),
            max(w.box.y1 for w in self.words),
        )


@dataclass(frozen=True)
class Redaction:
    """A box to fill and the frames (0-based) it applies to; ``None`` means every frame."""

    box: Box
    source: BoxSource
    frames: frozenset[int] | None = None


@dataclass(frozen=True)
class PixelReport:
    """What the pixel stage did. Counts and categories only: never the text that was read."""

    examined: bool
    cleaned: bool
    boxes: int
    frames: int
    ocr_engine: str = ""
    mode: TextMode = TextMode.SENSITIVE_ONLY
    ocr_reads: int = 0
    phi_segments: int = 0
    entities: tuple[str, ...] = ()
    box_sources: tuple[BoxSource, ...] = ()
    photometric_in: str = ""
    photometric_out: str = ""
    transfer_syntax_in: str = ""
    transfer_syntax_out: str = ""
    verified: bool = False
    seconds: float = 0.0
    triage: Triage = Triage.NOT_RUN
    #: where it filled (boxes and their frames) and, when a profile keeps only some areas, those:
    #: what the workbench outlines on the preview (coordinates only, nothing read)
    redactions: tuple[Redaction, ...] = ()
    kept: tuple[Box, ...] = ()

    @staticmethod
    def not_examined(frames: int = 0) -> PixelReport:
        return PixelReport(examined=False, cleaned=False, boxes=0, frames=frames)
