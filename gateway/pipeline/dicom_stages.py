"""The DICOM stages of one instance, in order: policy drops -> pixels -> header -> markers ->
verify. The pipeline composes them; gateway.dicom and gateway.pixels do the work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydicom.dataset import Dataset

from gateway.dicom import tags as T
from gateway.dicom.deidentify import DeidResult, DicomDeidentifier
from gateway.dicom.file_meta import stamp_writer
from gateway.dicom.markers import add_markers
from gateway.dicom.originals import note_originals, read_originals
from gateway.dicom.rules import RuleSet
from gateway.dicom.values import read_values
from gateway.errors import DropError, QuarantineError, ReasonCode
from gateway.linkage.context import Linkage
from gateway.linkage.issued import is_collecting
from gateway.pipeline.verify import needles_for, verify_release
from gateway.profiles.compiler import CompiledDicom, CompiledPixels, CompiledProfile, compile_dicom
from gateway.profiles.model import Profile
from gateway.text.context import PhiContext

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


class PixelCleaner(Protocol):
    def is_available(self) -> bool: ...
    def missing_dependency(self) -> str | None: ...
    def needs_examination(self, ds: Dataset) -> bool: ...
    def clean(self, ds: Dataset, context: PhiContext) -> Any: ...


@dataclass(frozen=True)
class ProcessedInstance:
    dataset: Dataset
    result: DeidResult
    pixels_cleaned: bool
    #: what the pixel stage did, when it ran (the workbench outlines its redactions)
    pixel_report: Any = None  # a gateway.pixels PixelReport; typed loosely: pixels load lazily


def load_pixel_stage(pixels: CompiledPixels | None) -> PixelCleaner | None:
    """The pixel stage, when the profile asks for Clean Pixel Data. None when it cannot run:
    instances that need it are then quarantined (never forwarded uncleaned)."""
    if pixels is None:
        return None
    try:
        from gateway.pixels import PixelStage
    except ImportError:
        return None
    stage: PixelCleaner = PixelStage(pixels.settings, regions=pixels.regions)
    return stage


class DicomProcessor:
    """Everything needed to de-identify instances under one profile + key. Build once."""

    def __init__(
        self, profile: Profile, linkage: Linkage, compiled: CompiledDicom | None = None
    ) -> None:
        """``compiled``: what the profile compiler built (else the profile is compiled here;
        ProfileInvalid when it has problems). Nothing is checked here."""
        if compiled is None:
            compiled = compile_dicom(profile)
        self.profile = profile
        self.rules: RuleSet = compiled.rules
        self.deidentifier = DicomDeidentifier(self.rules, linkage)
        self.wants_pixels = compiled.pixels is not None
        self.pixel_stage = load_pixel_stage(compiled.pixels)

    @classmethod
    def from_compiled(cls, compiled: CompiledProfile, linkage: Linkage) -> DicomProcessor:
        return cls(compiled.profile, linkage, compiled.dicom)

    def process(self, ds: Dataset, person_key: str | None = None) -> ProcessedInstance:
        """De-identify ``ds`` in place; raise QuarantineError / DropError when it cannot go."""
        meta = getattr(ds, "file_meta", None)
        sop_class = (
            read_values(meta, T.MEDIA_STORAGE_SOP_CLASS_UID, "UI") if meta is not None else []
        )
        if DICOMDIR_CLASS in sop_class or T.DIRECTORY_RECORD_SEQUENCE in ds:
            raise DropError(
                ReasonCode.DICOMDIR_DROPPED,
                "DICOMDIR carries PHI; rebuild it from the output",
                stage="policy",
            )
        if T.ENCAPSULATED_DOCUMENT in ds and not self.profile.dicom.keep_encapsulated_documents:
            raise DropError(
                ReasonCode.ENCAPSULATED_DOCUMENT_DROPPED,
                "encapsulated document (PDF/CDA) not kept by profile",
                stage="policy",
            )
        if T.SOP_INSTANCE_UID not in ds:
            raise QuarantineError(ReasonCode.MISSING_UID, "no SOPInstanceUID", stage="intake")
        originals = read_originals(ds) if is_collecting() else None  # only for a vault
        state = self.deidentifier.prepare(ds, person_key)
        report = None
        if self.wants_pixels and any(t in ds for t in T.PIXEL_DATA_TAGS):
            report = self._clean_pixels(ds, state.phi)
        pixels_cleaned = bool(getattr(report, "cleaned", False))
        result = self.deidentifier.deidentify(ds, state)
        add_markers(ds, self.rules, result, pixels_cleaned)
        stamp_writer(ds)
        verify_release(ds, needles_for(result.needles, result.phi), self.rules)
        if originals is not None:
            note_originals(originals, ds, str(ds.get("PatientID") or result.person.patient_id))
        return ProcessedInstance(ds, result, pixels_cleaned, report)

    def _clean_pixels(self, ds: Dataset, phi: PhiContext) -> Any:
        stage = self.pixel_stage
        if stage is None:
            raise QuarantineError(
                ReasonCode.PIXEL_CLEANER_UNAVAILABLE,
                "pixel cleaning is not installed",
                stage="pixels",
            )
        if not stage.needs_examination(ds):
            return None
        # the stage asks for OCR only when it needs it: an image the triage finds no text in
        # is examined without it; one that needs OCR it cannot run is quarantined there
        return stage.clean(ds, phi)
