"""The free-text engine shared by FHIR free text and DICOM free text under Clean.

One registry, built once per profile: the patient's deny-list, the Safe Harbor shapes
(:class:`~gateway.text.recognizers.PatternRecognizer`), identifiers of anyone by shape and cue
(:mod:`gateway.text.identity_patterns`) and, when ``free_text.nlp`` is on, Presidio. Presidio's
spans do not depend on the patient, so they are cached per text (a series repeats its
descriptions); for DICOM descriptors the model is wrapped in the clinical-vocabulary filter
(:mod:`gateway.text.vocabulary`). The settings are the profile's ``fhir.free_text``: one engine,
one configuration, for both kinds of payload.
"""

from __future__ import annotations

from gateway.errors import ConfigurationError, ReasonCode
from gateway.profiles.fhir_model import FreeTextSettings
from gateway.text.cache import DEFAULT_SIZE, CachedRecognizer
from gateway.text.identity_patterns import IdentityPatternRecognizer
from gateway.text.presidio_recognizer import PresidioRecognizer
from gateway.text.recognizers import Recognizer, RecognizerRegistry, default_registry
from gateway.text.vocabulary import VocabularyFilter

STAGE = "text"


def build_text_registry(
    settings: FreeTextSettings, *, descriptors: bool = False, cache_size: int = DEFAULT_SIZE
) -> RecognizerRegistry:
    """The registry for free text. ``descriptors``: short, often upper-case DICOM text (the
    NLP model gets the vocabulary filter). Raises :class:`ConfigurationError` when NLP is asked
    for and unavailable: the gateway refuses to start rather than run without it."""
    registry = default_registry()
    registry.register(IdentityPatternRecognizer())
    if settings.nlp:
        presidio = PresidioRecognizer(
            tuple(settings.presidio_entities),
            model=settings.spacy_model,
            score_threshold=settings.score_threshold,
            allow_list=tuple(settings.allow_list),
        )
        missing = presidio.missing_dependency()
        if missing is not None:
            raise ConfigurationError(
                ReasonCode.PROFILE_INVALID,
                f"fhir.free_text.nlp needs {missing} (or set nlp: false)",
                stage=STAGE,
            )
        model: Recognizer = VocabularyFilter(presidio) if descriptors else presidio
        registry.register(CachedRecognizer(model, cache_size))
    return registry
