"""Free-text PHI detection and replacement, shared by DICOM descriptors, SR, FHIR and OCR text.

Detection is pluggable (Presidio-style): recognizers declare what they find and whether their
dependencies are available; a registry holds the ones registered explicitly.
"""

from gateway.text.context import PhiContext
from gateway.text.recognizers import Recognizer, RecognizerRegistry, default_registry
from gateway.text.scrubber import CleanResult, TextScrubber
from gateway.text.spans import Span

__all__ = [
    "CleanResult",
    "PhiContext",
    "Recognizer",
    "RecognizerRegistry",
    "Span",
    "TextScrubber",
    "default_registry",
]
