"""OCR engines (pluggable, Presidio-style) and grouping of words into readable segments."""

from __future__ import annotations

import os
import shutil
import subprocess
from enum import IntEnum
from typing import Protocol

from PIL import Image

from gateway.pixels.model import Box, TextSegment, Word

MIN_CONFIDENCE = 0.0  # tesseract's -1 marks non-words; low-confidence words still count


class PageSegMode(IntEnum):
    """tesseract's page segmentation modes the stage uses (``--psm``)."""

    SINGLE_BLOCK = 6  # one block of text: the re-read of redacted lines
    SINGLE_LINE = 7  # one line: each redacted line on its own
    SPARSE_TEXT = 11  # text anywhere, in any order: detection


class OcrEngine(Protocol):
    name: str

    def is_available(self) -> bool: ...

    def missing_dependency(self) -> str | None: ...

    def read(self, image: Image.Image, psm: PageSegMode | None = None) -> list[Word]:
        """Words in ``image``; ``psm`` overrides the engine's page segmentation."""
        ...


class TesseractEngine:
    """The ``tesseract`` program, sparse-text page segmentation (``--psm 11``), LSTM engine.

    Runs the binary directly (a PGM image on stdin, TSV on stdout: no temporary files, no PNG
    encoding). tesseract's OpenMP threads make it several times slower on small machines, so it
    runs with ``OMP_THREAD_LIMIT=1`` (parallelism belongs to the worker pool). Polarity is
    normalised before OCR, so tesseract's second, inverted pass is switched off.
    """

    name = "tesseract"

    def __init__(self, language: str = "eng", psm: int = 11, timeout: float = 60.0) -> None:
        self.command = [
            "tesseract",
            "stdin",
            "stdout",
            "-l",
            language,
            "--psm",
            str(psm),
            "--oem",
            "1",
            "-c",
            "tessedit_do_invert=0",
            "tsv",
        ]
        self.timeout = timeout
        self.environment = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    @staticmethod
    def is_available() -> bool:
        return TesseractEngine.missing_dependency() is None

    @staticmethod
    def missing_dependency() -> str | None:
        if shutil.which("tesseract") is None:
            return "tesseract-ocr (Debian package)"
        return None

    def read(self, image: Image.Image, psm: PageSegMode | None = None) -> list[Word]:
        grey = image.convert("L")
        header = f"P5\n{grey.width} {grey.height}\n255\n".encode()
        command = list(self.command)
        if psm is not None:
            command[command.index("--psm") + 1] = str(int(psm))
        done = subprocess.run(
            command,
            input=header + grey.tobytes(),
            capture_output=True,
            timeout=self.timeout,
            env=self.environment,
            check=False,
        )
        if done.returncode != 0:
            raise OcrFailed(f"tesseract exited with status {done.returncode}")
        return parse_tsv(done.stdout.decode("utf-8", errors="replace"))


class OcrFailed(RuntimeError):
    """The OCR program failed (its output is not included: it could contain read text)."""


def parse_tsv(tsv: str) -> list[Word]:
    words: list[Word] = []
    lines = tsv.splitlines()
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) < 12:
            continue
        text = fields[11].strip()
        try:
            confidence = float(fields[10])
            left, top, width, height = (int(v) for v in fields[6:10])
        except ValueError:
            continue
        if not text or confidence < MIN_CONFIDENCE:
            continue
        words.append(Word(text, Box(left, top, left + width, top + height), confidence))
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
