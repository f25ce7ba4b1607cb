"""The pixel stage: examine, redact, re-encode losslessly, verify."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import pydicom

from gateway.errors import ConfigurationError, QuarantineError, ReasonCode
from gateway.pixels.codec import STAGE, DecodedPixels, OutputEncoding, decode, write
from gateway.pixels.detect import apply, detect, verify_local
from gateway.pixels.fuzzy import DenyIndex
from gateway.pixels.libtesseract import LibTesseractEngine
from gateway.pixels.lines import read_lines
from gateway.pixels.model import (
    Box,
    BoxSource,
    Examination,
    PixelReport,
    Redaction,
    TextMode,
    Triage,
)
from gateway.pixels.ocr import OcrEngine, OcrFailed, TesseractEngine
from gateway.pixels.parts import ValueParts
from gateway.pixels.phi import OcrPhiClassifier
from gateway.pixels.regions import ProfileRegion, RegionRules
from gateway.pixels.render import Palette, display_grey
from gateway.pixels.reread import annotation_frames, reread_lines
from gateway.pixels.triage import find_lines, triage_frames
from gateway.profiles.model import ExaminePolicy, PixelSettings
from gateway.text import PhiContext, RecognizerRegistry, default_registry

LOG = logging.getLogger(__name__)
REDACTION_ROUNDS = 3  # redact, verify, widen where parts are still read, verify again
EXAMINATION_OF_UNLISTED = {
    ExaminePolicy.ALL: Examination.OCR,
    ExaminePolicy.TRIAGE: Examination.TRIAGE,
    ExaminePolicy.LISTED: Examination.NONE,
}


class PixelStage:
    """Clean Pixel Data: built once per process from the profile's ``dicom.pixels``."""

    def __init__(
        self,
        settings: PixelSettings,
        *,
        engine: OcrEngine | None = None,
        registry: RecognizerRegistry | None = None,
        regions: Sequence[ProfileRegion] | None = None,
    ) -> None:
        """``regions``: the compiler's typed device rules (default: from ``settings``)."""
        self.settings = settings
        self.mode = TextMode(settings.mode)
        self.encoding = OutputEncoding(settings.output)
        self.engine: OcrEngine = engine or default_engine()
        self.classifier = OcrPhiClassifier(self.mode, registry or build_registry(settings))
        self.verifier = OcrPhiClassifier(TextMode.SENSITIVE_ONLY, self.classifier.registry)
        self.rules = RegionRules(
            settings.regions if regions is None else regions,
            deid_filters=settings.deid_filters,
            ultrasound_outside_regions=settings.ultrasound_outside_regions,
        )

    @staticmethod
    def is_available() -> bool:
        return PixelStage.missing_dependency() is None

    @staticmethod
    def missing_dependency() -> str | None:
        if LibTesseractEngine.is_available() or TesseractEngine.is_available():
            return None
        return TesseractEngine.missing_dependency()

    def needs_examination(self, ds: pydicom.Dataset) -> bool:
        """Whether the profile's examine rule examines ``ds`` at all (by OCR or triage)."""
        return self.examination(ds) is not Examination.NONE

    def examination(self, ds: pydicom.Dataset) -> Examination:
        """The profile's examine rule. BurnedInAnnotation=NO is never a reason to skip."""
        if "PixelData" not in ds:
            return Examination.NONE
        rule = self.settings.examine
        if rule.policy is ExaminePolicy.ALL or self._listed(ds):
            return Examination.OCR
        return EXAMINATION_OF_UNLISTED[rule.policy]

    def _listed(self, ds: pydicom.Dataset) -> bool:
        rule = self.settings.examine
        if str(ds.get("Modality", "")).upper() in {m.upper() for m in rule.modalities}:
            return True
        if str(ds.get("SOPClassUID", "")) in set(rule.sop_classes):
            return True
        if rule.burned_in_annotation_yes and str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            return True
        image_type = ds.get("ImageType") or []
        values = {
            str(v).upper() for v in ([image_type] if isinstance(image_type, str) else image_type)
        }
        return bool(values & {t.upper() for t in rule.image_types})

    def clean(self, ds: pydicom.Dataset, context: PhiContext) -> PixelReport:
        """Redact burned-in PHI in ``ds`` in place; raise ``QuarantineError`` if it remains.

        ``report.cleaned`` means examined and verified free of readable PHI: the triage found
        no frame likely to hold text (``report.triage`` is ``no-text``, OCR not run), or OCR
        read it and what it read as PHI was redacted and read again (``report.boxes == 0``
        when nothing had to be). Pixel Data is rewritten only when something was redacted.
        Images that the examine rule sends to triage are triaged first; any other call reads
        by OCR (an explicit call is a request to examine).
        """
        try:
            return self._clean(ds, context)
        except OcrFailed:
            raise QuarantineError(
                ReasonCode.PIXEL_CLEANER_UNAVAILABLE, "the OCR engine failed", stage=STAGE
            ) from None

    def _clean(self, ds: pydicom.Dataset, context: PhiContext) -> PixelReport:
        started = time.perf_counter()
        triaged = self.examination(ds) is Examination.TRIAGE
        if not triaged:
            self._require_engine()
        syntax_in = (
            str(ds.file_meta.TransferSyntaxUID)
            if "TransferSyntaxUID" in getattr(ds, "file_meta", {})
            else ""
        )
        pixels = decode(ds)
        palette = Palette.from_dataset(ds)
        known = self.rules.regions(ds)
        grey = self._grey(pixels.frames, pixels, palette)
        deep_grey = pixels.samples == 1 and palette is None and pixels.bits_allocated > 8
        triage = Triage.NOT_RUN
        if triaged:
            if not known.redact and not known.keep:  # a vendor region is read whatever
                verdict = triage_frames(grey, saturated_too=deep_grey)
                if not verdict.text_likely:  # examined: no text to read, nothing to redact
                    return self._report(
                        pixels, started, syntax_in, syntax_in, reads=0, triage=Triage.NO_TEXT
                    )
            triage = Triage.TEXT_LIKELY
            self._require_engine()
        index = DenyIndex(context)
        parts = ValueParts.from_context(context)
        keep = [b for b, _ in known.keep]
        redactions = [Redaction(b, source) for b, source in known.redact]
        sources: set[BoxSource] = {s for _, s in known.redact} | {s for _, s in known.keep}
        fill = _fill_value(pixels, palette)

        found = detect(
            grey,
            self.engine,
            self.classifier,
            context,
            index,
            deep_grey,
            annotation_frames(pixels.frames),
        )
        reads, segments, entities = found.reads, found.segments, set(found.entities)
        redactions.extend(found.redactions)
        if triage is Triage.TEXT_LIKELY:  # and each line the triage saw, read alone
            lines = [(f, line) for f in range(len(grey)) for line in find_lines(grey[f], deep_grey)]
            alone = read_lines(grey, lines, self.engine, self.classifier, context, index)
            reads, segments = reads + alone.reads, segments + alone.segments
            entities.update(alone.entities)
            redactions.extend(alone.redactions)
        if not redactions and not keep:
            return self._report(pixels, started, syntax_in, syntax_in, reads=reads, triage=triage)

        frames = pixels.frames
        verified = False
        for _ in range(REDACTION_ROUNDS):
            frames = apply(pixels.frames, redactions, keep, fill)
            redacted = self._grey(frames, pixels, palette)
            if keep or self.settings.full_verification:  # read the frames again whole
                remaining = detect(redacted, self.engine, self.verifier, context, index, deep_grey)
            else:
                remaining = verify_local(
                    redacted, redactions, self.engine, self.verifier, context, index
                )
            # any part of a value (a date's month, a name token) left readable on a redacted line
            remaining += reread_lines(
                redacted, redactions, self.engine, parts, text_end=annotation_frames(frames)
            )
            reads += remaining.reads
            if remaining.segments == 0:
                verified = True
                break
            segments += remaining.segments
            entities.update(remaining.entities)
            if not remaining.redactions:
                break  # read, but not where a box could go: nothing more to try
            redactions.extend(remaining.redactions)
        if not verified:
            LOG.warning("pixel PHI remains after redaction (%d segments)", segments)
            raise QuarantineError(
                ReasonCode.PIXEL_PHI_REMAINS, "OCR still reads PHI after redaction", stage=STAGE
            )
        sources.update(r.source for r in redactions)
        syntax_out = write(ds, pixels, frames, self.encoding)
        return self._report(
            pixels,
            started,
            syntax_in,
            syntax_out,
            reads=reads,
            triage=triage,
            boxes=len({r.box for r in redactions}) + (1 if keep else 0),
            segments=segments,
            entities=tuple(sorted(entities)),
            sources=tuple(sorted(sources, key=lambda s: s.value)),
            redactions=tuple(redactions),
            kept=tuple(keep),
        )

    def _require_engine(self) -> None:
        if not self.engine.is_available():
            raise QuarantineError(
                ReasonCode.PIXEL_CLEANER_UNAVAILABLE,
                f"install {self.engine.missing_dependency()}",
                stage=STAGE,
            )

    @staticmethod
    def _grey(frames: np.ndarray, pixels: DecodedPixels, palette: Palette | None) -> np.ndarray:
        return np.stack([display_grey(f, pixels.photometric_out, palette) for f in frames])

    def _report(
        self,
        pixels: DecodedPixels,
        started: float,
        syntax_in: str,
        syntax_out: str,
        *,
        reads: int,
        triage: Triage,
        boxes: int = 0,
        segments: int = 0,
        entities: tuple[str, ...] = (),
        sources: tuple[BoxSource, ...] = (),
        redactions: tuple[Redaction, ...] = (),
        kept: tuple[Box, ...] = (),
    ) -> PixelReport:
        return PixelReport(
            examined=True,
            cleaned=True,
            boxes=boxes,
            frames=pixels.count,
            ocr_engine=self.engine.name,
            mode=self.mode,
            ocr_reads=reads,
            phi_segments=segments,
            entities=entities,
            box_sources=sources,
            photometric_in=pixels.photometric_in,
            photometric_out=pixels.photometric_out if boxes else pixels.photometric_in,
            transfer_syntax_in=syntax_in,
            transfer_syntax_out=syntax_out,
            verified=True,
            seconds=time.perf_counter() - started,
            triage=triage,
            redactions=redactions,
            kept=kept,
        )


def build_registry(settings: PixelSettings) -> RecognizerRegistry:
    """Deny-list + patterns; with ``ner``, Presidio too (refused at start if unavailable)."""
    registry = default_registry()
    if settings.ner:
        from gateway.text.presidio_recognizer import PresidioRecognizer

        recognizer = PresidioRecognizer(entities=("PERSON", "LOCATION", "PHONE_NUMBER"))
        if not recognizer.is_available():
            raise ConfigurationError(
                ReasonCode.PROFILE_INVALID,
                f"dicom.pixels.ner needs {recognizer.missing_dependency()}",
                stage=STAGE,
            )
        registry.register(recognizer)
    return registry


def default_engine() -> OcrEngine:
    """tesseract's C API when the library is there (model loaded once), else its program."""
    if LibTesseractEngine.is_available():
        return LibTesseractEngine()
    return TesseractEngine()


def _fill_value(pixels: DecodedPixels, palette: Palette | None) -> int | float:
    """Black as displayed: darkest palette entry, minimum (MONOCHROME2/colour) or maximum."""
    if palette is not None:
        return palette.darkest_index
    if pixels.samples > 1:
        return 0
    extreme = (
        pixels.frames.max() if pixels.photometric_out == "MONOCHROME1" else pixels.frames.min()
    )
    value: int | float = extreme.item()
    return value
