"""OCR engines (pluggable, Presidio-style) and grouping of words into readable segments."""

from __future__ import annotations

import os
import shutil
from typing import Protocol

from PIL import Image

from gateway.pixels.model import Box, TextSegment, Word

MIN_CONFIDENCE = 0.0  # tesseract's -1 marks non-words; low-confidence words still count


class OcrEngine(Protocol):
    name: str

    def is_available(self) -> bool: ...

    def missing_dependency(self) -> str | None: ...

    def read(self, image: Image.Image) -> list[Word]: ...


class TesseractEngine:
    """tesseract through pytesseract, sparse-text page segmentation (``--psm 11``).

    tesseract's OpenMP threads make it several times slower on small machines, so the engine
    runs it with ``OMP_THREAD_LIMIT=1`` (parallelism belongs to the worker pool).
    """

    name = "tesseract"

    def __init__(self, language: str = "eng", psm: int = 11) -> None:
        self.language = language
        self.config = f"--psm {psm} --oem 1"

    @staticmethod
    def is_available() -> bool:
        return TesseractEngine.missing_dependency() is None

    @staticmethod
    def missing_dependency() -> str | None:
        try:
            import pytesseract  # noqa: F401
        except ImportError:
            return "pytesseract (Python package)"
        if shutil.which("tesseract") is None:
            return "tesseract-ocr (Debian package)"
        return None

    def read(self, image: Image.Image) -> list[Word]:
        import pytesseract

        os.environ["OMP_THREAD_LIMIT"] = "1"
        data = pytesseract.image_to_data(
            image, lang=self.language, config=self.config, output_type=pytesseract.Output.DICT
        )
        words: list[Word] = []
        for i, text in enumerate(data["text"]):
            text = str(text).strip()
            confidence = float(data["conf"][i])
            if not text or confidence < MIN_CONFIDENCE:
                continue
            left, top = int(data["left"][i]), int(data["top"][i])
            box = Box(left, top, left + int(data["width"][i]), top + int(data["height"][i]))
            words.append(Word(text, box, confidence))
        return words


def segments(words: list[Word], gap_factor: float = 1.6) -> list[TextSegment]:
    """Group words that share a line and sit close together (gap < ``gap_factor`` x height)."""
    ordered = sorted(words, key=lambda w: (w.box.y0, w.box.x0))
    lines: list[list[Word]] = []
    for word in ordered:
        for line in lines:
            last = line[-1]
            if _same_line(last.box, word.box):
                line.append(word)
                break
        else:
            lines.append([word])
    result: list[TextSegment] = []
    for line in lines:
        line.sort(key=lambda w: w.box.x0)
        current = [line[0]]
        for word in line[1:]:
            height = max(current[-1].box.y1 - current[-1].box.y0, word.box.y1 - word.box.y0)
            if word.box.x0 - current[-1].box.x1 <= gap_factor * height:
                current.append(word)
            else:
                result.append(TextSegment(tuple(current)))
                current = [word]
        result.append(TextSegment(tuple(current)))
    return result


def _same_line(a: Box, b: Box) -> bool:
    overlap = min(a.y1, b.y1) - max(a.y0, b.y0)
    return overlap > 0.5 * min(a.y1 - a.y0, b.y1 - b.y0)
