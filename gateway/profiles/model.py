"""The profile: one document, written by a privacy officer, governing DICOM, FHIR and linkage.

Profiles are data (YAML in ``profiles/``). This module is their schema: pydantic models with
``extra="forbid"`` so that a typo is an error, not a silently ignored rule.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from enum import Enum
from functools import cached_property
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydicom.datadict import tag_for_keyword

from gateway.profiles.fhir_model import FhirSettings

STANDARD = "standard"  # ``profile explain``'s "from" when the standard, not a file, decides


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileOption(str, Enum):
    """PS3.15 Annex E options, with their CID 7050 codes (DeidentificationMethodCodeSequence)."""

    CLEAN_PIXEL_DATA = "clean_pixel_data"
    CLEAN_RECOGNIZABLE_VISUAL_FEATURES = "clean_recognizable_visual_features"
    CLEAN_GRAPHICS = "clean_graphics"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain_longitudinal_full_dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain_longitudinal_modified_dates"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_UIDS = "retain_uids"
    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"


CID_7050: dict[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    ProfileOption.CLEAN_PIXEL_DATA.value: ("113101", "Clean Pixel Data Option"),
    ProfileOption.CLEAN_RECOGNIZABLE_VISUAL_FEATURES.value: (
        "113102",
        "Clean Recognizable Visual Features Option",
    ),
    ProfileOption.CLEAN_GRAPHICS.value: ("113103", "Clean Graphics Option"),
    ProfileOption.CLEAN_STRUCTURED_CONTENT.value: ("113104", "Clean Structured Content Option"),
    ProfileOption.CLEAN_DESCRIPTORS.value: ("113105", "Clean Descriptors Option"),
    ProfileOption.RETAIN_LONGITUDINAL_FULL_DATES.value: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    ProfileOption.RETAIN_LONGITUDINAL_MODIFIED_DATES.value: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    ProfileOption.RETAIN_PATIENT_CHARACTERISTICS.value: (
        "113108",
        "Retain Patient Characteristics Option",
    ),
    ProfileOption.RETAIN_DEVICE_IDENTITY.value: ("113109", "Retain Device Identity Option"),
    ProfileOption.RETAIN_UIDS.value: ("113110", "Retain UIDs Option"),
    ProfileOption.RETAIN_SAFE_PRIVATE.value: ("113111", "Retain Safe Private Option"),
    ProfileOption.RETAIN_INSTITUTION_IDENTITY.value: (
        "113112",
        "Retain Institution Identity Option",
    ),
}


class Action(str, Enum):
    """What happens to an attribute. The first six are PS3.15's own codes K X Z D C U."""

    KEEP = "keep"
    REMOVE = "remove"
    EMPTY = "empty"
    DUMMY = "dummy"
    CLEAN = "clean"
    UID = "uid"
    PATIENT_PSEUDONYM = "patient-pseudonym"
    ACCESSION_PSEUDONYM = "accession-pseudonym"
    HASH = "hash"
    SHIFT_DATE = "shift-date"
    YEAR_ONLY = "year-only"
    AGE_CAP = "age-cap"
    SET = "set"


class DateMethod(str, Enum):
    """How 'Modified Dates' modifies: shift by the per-patient offset, or keep the year only."""

    SHIFT = "shift"
    YEAR_ONLY = "year-only"


class CompoundPolicy(str, Enum):
    """PS3.15 compound codes (X/Z, Z/D, X/Z/D...) depend on the IOD's attribute type.

    ``preserve-conformance`` decides by the attribute's type in the instance's IOD (its SOP
    Class): Type 1/1C a dummy, Type 2/2C zero length, Type 3 or not in the IOD removal, so the
    output is as valid as its input (gateway/dicom/compound.py); for a SOP class the shipped
    IOD table does not know, the least destructive choice (D over Z over X).
    ``remove-when-allowed`` takes X whenever the code allows it.
    """

    PRESERVE_CONFORMANCE = "preserve-conformance"
    REMOVE_WHEN_ALLOWED = "remove-when-allowed"


class Override(Strict):
    attribute: str = Field(description="keyword (PatientID) or tag (0010,0020) / 00100020")
    action: Action
    value: str | None = Field(default=None, description="the value for action 'set'")
    why: str = ""

    @model_validator(mode="after")
    def _set_needs_value(self) -> Override:
        if self.action is Action.SET and self.value is None:
            raise ValueError("action 'set' needs a 'value'")
        return self

    @field_validator("attribute")
    @classmethod
    def _known_attribute(cls, value: str) -> str:
        text = value.strip()
        hexdigits = re.sub(r"[()\s,x]", "", text, flags=re.IGNORECASE)
        if tag_for_keyword(text) is None and not re.fullmatch(r"[0-9A-Fa-f]{8}", hexdigits):
            raise ValueError(
                f"'{text}' is neither a DICOM keyword (e.g. PatientID) nor a tag like (0010,0020)"
            )
        return value


class UnlistedPolicy(Strict):
    """Attributes not in Table E.1-1: keep by default (as the standard), per VR otherwise."""

    default: Action = Action.KEEP
    by_vr: dict[str, Action] = Field(default_factory=lambda: {"PN": Action.DUMMY})


class SafePrivateBlock(Strict):
    creator: str
    group: int | None = None
    elements: list[int] = Field(description="element offsets (0x00-0xFF) within the block")


class ExaminePolicy(str, Enum):
    """Which images are examined for burned-in text (``dicom.pixels.examine.policy``)."""

    ALL = "all"  # OCR every image
    TRIAGE = "triage"  # OCR the listed images; triage every other one, OCR where text is likely
    LISTED = "listed"  # OCR the listed images; the others are not examined (no 113101)


class PixelExamineRule(Strict):
    """Which instances are examined for burned-in text (header flags lie; be generous).

    The lists (modalities, SOP classes, image types, BurnedInAnnotation YES) name the images
    that always go to OCR; ``policy`` says what happens to every other image.
    """

    policy: ExaminePolicy = ExaminePolicy.TRIAGE
    modalities: list[str] = Field(default_factory=lambda: ["US", "SC", "OT", "XC", "ES", "DOC"])
    sop_classes: list[str] = Field(default_factory=list)
    burned_in_annotation_yes: bool = True
    image_types: list[str] = Field(default_factory=lambda: ["SECONDARY", "SCREEN SHOT"])

    @model_validator(mode="before")
    @classmethod
    def _legacy_all(cls, data: Any) -> Any:
        """Profiles written before ``policy``: ``all: true`` is ``policy: all``; ``all: false``
        said only "not every image by OCR", which the default (triage) still honours."""
        if not isinstance(data, dict) or "all" not in data:
            return data
        data = dict(data)
        if data.pop("all") is True:
            if data.get("policy", "all") != "all":
                raise ValueError("examine.all: true contradicts examine.policy; keep policy only")
            data["policy"] = "all"
        return data


def _pixel_box(box: list[int]) -> list[int]:
    if len(box) != 4:
        raise ValueError("a box is four numbers [x0, y0, x1, y1]")
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise ValueError("a box [x0, y0, x1, y1] needs x1 > x0 and y1 > y0 (half-open)")
    return box


PixelBox = Annotated[list[int], AfterValidator(_pixel_box)]


class PixelRegion(Strict):
    """A device rule: where a device burns text in, redacted whatever OCR reads.

    Boxes are ``[x0, y0, x1, y1]``, half-open (columns x0 <= x < x1, rows y0 <= y < y1);
    ``match`` is DICOM keyword -> value (text: contained, case-insensitive; numbers: equal).
    """

    match: dict[str, str | int | float] = Field(default_factory=dict)
    boxes: list[PixelBox] = Field(default_factory=list)
    keep: list[PixelBox] = Field(
        default_factory=list, description="everything outside these boxes is redacted"
    )
    why: str = ""


class PixelSettings(Strict):
    examine: PixelExamineRule = Field(default_factory=PixelExamineRule)
    mode: str = Field(default="sensitive-only", pattern="^(sensitive-only|all-text)$")
    regions: list[PixelRegion] = Field(
        default_factory=list,
        description="device rules: {match: {Keyword: value}, boxes: [[x0,y0,x1,y1]], keep: [...]}",
    )
    deid_filters: bool = Field(
        default=True, description="also redact the deid package's known vendor/model regions"
    )
    ultrasound_outside_regions: bool = Field(
        default=False, description="redact everything outside SequenceOfUltrasoundRegions"
    )
    full_verification: bool = Field(
        default=False,
        description="after redaction re-read whole frames, not only around the boxes",
    )
    ner: bool = Field(
        default=False,
        description="also run Presidio's NER (names, places) on burned-in text, sensitive-only",
    )
    output: str = Field(
        default="explicit-vr-little-endian",
        pattern="^(explicit-vr-little-endian|rle-lossless|jpeg2000-lossless)$",
        description="lossless encoding of redacted pixel data",
    )


class DateSettings(Strict):
    method: DateMethod = DateMethod.SHIFT
    range_days: int = Field(default=365, ge=1, le=3650)


class DicomSettings(Strict):
    options: list[ProfileOption] = Field(default_factory=list)
    compound_actions: CompoundPolicy = CompoundPolicy.PRESERVE_CONFORMANCE
    unlisted: UnlistedPolicy = Field(default_factory=UnlistedPolicy)
    safe_private: list[SafePrivateBlock] = Field(default_factory=list)
    keep_encapsulated_documents: bool = False
    age_cap_years: int | None = Field(
        default=None, description="ages above this are reported as this+1 ('90Y' for 89)"
    )
    overrides: list[Override] = Field(default_factory=list)
    pixels: PixelSettings = Field(default_factory=PixelSettings)

    @field_validator("options")
    @classmethod
    def _no_conflicting_date_options(cls, value: list[ProfileOption]) -> list[ProfileOption]:
        both = {
            ProfileOption.RETAIN_LONGITUDINAL_FULL_DATES,
            ProfileOption.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        }
        if both <= set(value):
            raise ValueError(
                "choose one of retain_longitudinal_full_dates and "
                "retain_longitudinal_modified_dates, not both"
            )
        if len(set(value)) != len(value):
            raise ValueError("an option is listed twice")
        return value


class IdentityNamespaceModel(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._:-]+$")
    dicom_issuers: list[str] = Field(default_factory=list)
    fhir_systems: list[str] = Field(default_factory=list)


class IdentitySettings(Strict):
    default_dicom_namespace: str = "local-mrn"
    namespaces: list[IdentityNamespaceModel] = Field(default_factory=list)


class LinkageSettings(Strict):
    key_id: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    patient_id_prefix: str = Field(default="", pattern=r"^[A-Z0-9-]{0,16}$")
    dates: DateSettings = Field(default_factory=DateSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)


class Profile(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    version: str
    description: str = ""
    linkage: LinkageSettings = Field(default_factory=LinkageSettings)
    dicom: DicomSettings = Field(default_factory=DicomSettings)
    fhir: FhirSettings = Field(default_factory=FhirSettings)
    _source: Any = PrivateAttr(default=None)  # problems.SourceMap when read from a file

    @cached_property
    def content_hash(self) -> str:
        """Hash of the effective profile: recorded in DeidentificationMethod and in audits.
        Computed once (the model is frozen): the intake records it with every request."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with changes hashes anew (the cached hash is the original's)."""
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("content_hash", None)
        return copied

    def decided_by(self, setting: tuple[Any, ...] | None) -> str:
        """The file whose ``setting`` decides (an ``extends`` chain has several);
        ``standard`` when no setting does (PS3.15 alone, built-in rules)."""
        if setting is None:
            return STANDARD
        source = self._source
        return str(source.file_of(setting)) if source is not None else "<profile>"

    @property
    def method_description(self) -> str:
        """DeidentificationMethod (LO, <= 64 chars): profile name, version, content hash."""
        return f"deid-gateway {self.name} v{self.version} #{self.content_hash}"[:64]
