"""Compiled FHIR rules: path and type matching, first match wins, built-in fail-closed defaults.

A path is ``Root.element.element`` where ``Root`` is a resource type (``Patient``), ``Resource``
or ``*`` (any resource), or a data type (``Reference``, ``Identifier``...) matched wherever that
type occurs. Any segment may carry FHIRPath filters ``.where(expr)``, evaluated by fhirpathpy on
the element the segment selects (``Patient.identifier.where(system='http://...')``).

Matching is done against the element's *chain* (the names and types from the resource root), and
the filter-free part is cached per chain, so the hot path costs one dict lookup per element.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fhirpathpy

from gateway.errors import ConfigurationError, ReasonCode
from gateway.fhir.fastpath import compile_fast
from gateway.profiles.fhir_model import FhirMethod, FhirRule, Granularity

Chain = tuple[tuple[str, str], ...]  # ((name, type_name), ...); chain[0] = (ResType, ResType)
ANY_RESOURCE = frozenset({"*", "Resource", "DomainResource"})
PATH_SYNTAX = "Root.element.element with .where(FHIRPath) filters; Root a resource, data type or *"


@dataclass(frozen=True)
class Segment:
    name: str
    filters: tuple[Callable[..., Any], ...] = ()


@dataclass(frozen=True)
class CompiledRule:
    index: int  # position in the profile (-1.. for built-ins)
    rule: FhirRule
    root: str  # resource type, '*' or data type name ('' for type rules)
    root_filters: tuple[Callable[..., Any], ...]
    segments: tuple[Segment, ...]
    builtin: bool = False
    has_filters: bool = field(init=False, default=False)

    @property
    def method(self) -> FhirMethod:
        return self.rule.method

    def structural_positions(self, chain: Chain) -> list[int]:
        """Chain positions where the rule matches, ignoring filters (-1: none)."""
        if self.rule.type is not None:
            return [len(chain) - 1] if chain[-1][1] == self.rule.type else []
        n = len(self.segments)
        start = len(chain) - 1 - n
        if start < 0:
            return []
        name_ok = all(chain[start + 1 + i][0] == s.name for i, s in enumerate(self.segments))
        if not name_ok:
            return []
        _root_name, root_type = chain[start]
        if start == 0 and (self.root in ANY_RESOURCE or self.root == root_type):
            return [start]
        if start > 0 and root_type == self.root:
            return [start]
        return []

    def __post_init__(self) -> None:
        filtered = bool(self.root_filters) or any(s.filters for s in self.segments)
        object.__setattr__(self, "has_filters", filtered)

    def filters_pass(self, start: int, values: list[Any]) -> bool:
        """``values[i]`` is the JSON value at chain position i (list items, not lists)."""
        checks = [(start, self.root_filters)] + [
            (start + 1 + i, s.filters) for i, s in enumerate(self.segments)
        ]
        for position, filters in checks:
            for check in filters:
                try:
                    result = check(values[position])
                except Exception:  # noqa: BLE001 - a filter that cannot evaluate does not match
                    return False
                if result != [True]:
                    return False
        return True


def split_path(path: str) -> list[str]:
    """Split at dots outside parentheses and quotes."""
    parts: list[str] = []
    depth = 0
    quote = False
    current: list[str] = []
    for ch in path:
        if ch == "'" and depth:
            quote = not quote
        if not quote:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "." and depth == 0:
                parts.append("".join(current))
                current = []
                continue
        current.append(ch)
    parts.append("".join(current))
    if depth != 0 or quote or any(not p for p in parts):
        raise ValueError("unbalanced path")
    return parts


def compile_rule(index: int, rule: FhirRule, *, builtin: bool = False) -> CompiledRule:
    """Parse the rule's path; ConfigurationError (detail: what is wrong, ref: the rule) if it
    cannot be. Whether the path names real elements is :mod:`gateway.fhir.paths`' job."""
    if rule.path is None:
        return CompiledRule(index, rule, "", (), (), builtin)
    try:
        parts = split_path(rule.path.strip())
    except ValueError:
        raise ConfigurationError(
            ReasonCode.PROFILE_INVALID, "path is not well formed", ref=f"fhir.rules[{index}]"
        ) from None
    names: list[tuple[str, list[Callable[..., Any]]]] = []
    for part in parts:
        if part.startswith("where(") and part.endswith(")"):
            if not names:
                raise ConfigurationError(
                    ReasonCode.PROFILE_INVALID,
                    "path starts with where()",
                    ref=f"fhir.rules[{index}]",
                )
            expression = part[6:-1]
            try:
                fhirpathpy.compile(expression)  # always parsed, so errors show at start-up
                names[-1][1].append(compile_fast(expression) or fhirpathpy.compile(expression))
            except Exception:  # noqa: BLE001 - fhirpathpy raises assorted parser errors
                raise ConfigurationError(
                    ReasonCode.PROFILE_INVALID,
                    "FHIRPath filter does not parse",
                    ref=f"fhir.rules[{index}]",
                ) from None
        elif part.replace("*", "x").replace("_", "x").isalnum():
            names.append((part, []))
        else:
            what = "only element names and .where(...) are supported in paths"
            if part.endswith("[x]"):
                what += f"; a choice element is named by its type ({part[:-3]}String...)"
            raise ConfigurationError(ReasonCode.PROFILE_INVALID, what, ref=f"fhir.rules[{index}]")
    root, root_filters = names[0]
    segments = tuple(Segment(n, tuple(f)) for n, f in names[1:])
    return CompiledRule(index, rule, root, tuple(root_filters), segments, builtin)


def _builtin(
    path: str | None, type_: str | None, method: FhirMethod, why: str, **kw: Any
) -> FhirRule:
    return FhirRule.model_validate(
        {"path": path, "type": type_, "method": method, "why": why, **kw}
    )


BUILTIN_RULES: tuple[FhirRule, ...] = (
    _builtin("ImagingStudy.series.uid", None, FhirMethod.PSEUDONYMISE,
             "built-in: SeriesInstanceUID, the same pseudonym as DICOM", **{"as": "uid"}),
    _builtin("ImagingStudy.series.instance.uid", None, FhirMethod.PSEUDONYMISE,
             "built-in: SOPInstanceUID, the same pseudonym as DICOM", **{"as": "uid"}),
    _builtin(None, "HumanName", FhirMethod.REDACT, "built-in: names are identifiers (HIPAA A)"),
    _builtin(None, "Address", FhirMethod.GENERALIZE, "built-in: geography below state (B)",
             granularity=Granularity.STATE),
    _builtin(None, "ContactPoint", FhirMethod.REDACT, "built-in: phone/fax/email (D-F)"),
    _builtin(None, "Identifier", FhirMethod.PSEUDONYMISE, "built-in: identifiers keyed (H-R)"),
    _builtin(None, "Narrative", FhirMethod.CLEAN, "built-in: free text is scrubbed"),
    _builtin(None, "Annotation", FhirMethod.CLEAN, "built-in: free text is scrubbed"),
    _builtin(None, "Attachment", FhirMethod.CLEAN, "built-in: attachments scrubbed/removed"),
    _builtin(None, "markdown", FhirMethod.CLEAN, "built-in: free text is scrubbed"),
    _builtin(None, "xhtml", FhirMethod.CLEAN, "built-in: free text is scrubbed"),
    _builtin(None, "base64Binary", FhirMethod.REDACT, "built-in: opaque content removed"),
    _builtin("Meta.source", None, FhirMethod.REDACT, "built-in: source system URL"),
    _builtin("Extension.valueString", None, FhirMethod.CLEAN, "built-in: free text"),
    _builtin("Reference.display", None, FhirMethod.CLEAN, "built-in: displays name people"),
    _builtin(None, "date", FhirMethod.DATE_SHIFT, "built-in: dates (C) per patient"),
    _builtin(None, "dateTime", FhirMethod.DATE_SHIFT, "built-in: dates (C) per patient"),
    _builtin(None, "instant", FhirMethod.DATE_SHIFT, "built-in: dates (C) per patient"),
)  # fmt: skip


class RuleSet:
    """Profile rules followed by the built-ins, with a per-chain candidate cache."""

    def __init__(self, rules: list[FhirRule]) -> None:
        self._init([compile_rule(i, r) for i, r in enumerate(rules)])

    @classmethod
    def of(cls, compiled: Sequence[CompiledRule]) -> RuleSet:
        """From rules the profile compiler already compiled (and checked)."""
        ruleset = cls.__new__(cls)
        ruleset._init(list(compiled))
        return ruleset

    def _init(self, compiled: list[CompiledRule]) -> None:
        compiled += [compile_rule(-1 - i, r, builtin=True) for i, r in enumerate(BUILTIN_RULES)]
        self.rules = tuple(compiled)
        self._cache: dict[Chain, tuple[tuple[CompiledRule, int], ...]] = {}

    def candidates(self, chain: Chain) -> tuple[tuple[CompiledRule, int], ...]:
        found = self._cache.get(chain)
        if found is None:
            out: list[tuple[CompiledRule, int]] = []
            for rule in self.rules:
                for position in rule.structural_positions(chain):
                    out.append((rule, position))
            found = tuple(out)
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[chain] = found
        return found

    def match(self, chain: Chain, values: list[Any]) -> CompiledRule | None:
        for rule, position in self.candidates(chain):
            if not rule.has_filters or rule.filters_pass(position, values):
                return rule
        return None
