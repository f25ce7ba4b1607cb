"""The FHIR de-identifier: walks plain JSON with the schema's types and applies the profile rules.

Invariants that no rule can switch off (they keep the output linked and resolvable): resource
ids, ``Reference.reference``, contained ids, bundle fullUrls/request urls (see
:mod:`gateway.fhir.references`) and ``meta.security`` labels. Everything else goes through the
rules (profile first, then :data:`gateway.fhir.rules.BUILTIN_RULES`); an element no rule matches
is kept (codes, values and units of clinical data keep their utility).
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigurationError, QuarantineError, ReasonCode
from gateway.fhir.freetext import TextCleaner
from gateway.fhir.references import IdMapper, ReferenceMode
from gateway.fhir.resolver import PatientResolver, person_of_patient
from gateway.fhir.rules import Chain, CompiledRule, RuleSet
from gateway.fhir.schema import DATE_TYPES, ElementDef, Schema, TypeDef, schema_for
from gateway.fhir.values import (
    Encryptor,
    age_capped_year,
    generalize_address,
    generalize_date,
    perturb_number,
    pseudonymise_identifier,
    pseudonymise_primitive,
    transform_date,
)
from gateway.linkage.context import Linkage, PersonPseudonym
from gateway.linkage.dates import shift_fhir_date
from gateway.linkage.pseudonym import PersonRef
from gateway.profiles.fhir_model import FhirMethod, FhirVersion, Granularity, PseudonymKind
from gateway.profiles.model import Profile
from gateway.text.context import PhiContext

SECURITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
SECURITY_DISPLAY = {
    "PSEUDED": "pseudonymized",
    "REDACTED": "redacted",
    "ABSTRED": "abstracted",
    "MASKED": "masked",
}
NO_PATIENT = PersonRef("fhir:no-patient", "")
PATIENT_REFERENCE_KEYS = ("subject", "patient", "beneficiary", "individual", "target", "for")
TEXT_TYPES = frozenset({"string", "markdown"})
ENCRYPTABLE_TYPES = frozenset({"string", "markdown", "uri", "url"})
NUMBER_TYPES = frozenset({"decimal", "integer", "integer64", "positiveInt", "unsignedInt"})
DEFAULT_AGE_CAP = 89
PSEUDONYMISABLE_TYPES = frozenset(
    {"Identifier", "string", "id", "code", "uri", "oid", "uuid", "url", "markdown"}
)


@dataclass
class ResourceState:
    """What the walk of one resource needs and accumulates (mutable, local to one resource)."""

    resource_type: str
    person: PersonPseudonym
    phi: PhiContext
    mode: ReferenceMode
    contained: bool = False
    labels: set[str] = field(default_factory=set)


@dataclass
class DeidOutput:
    """One de-identified resource (or bundle) and the text spans replaced, by entity."""

    resource: dict[str, Any]
    spans: Counter[str]
    version: FhirVersion


def _path(chain: Chain) -> str:
    return ".".join([chain[0][0], *(name for name, _ in chain[1:])])


SCHEMA_STAGE = "fhir-schema"  # the input does not fit the version's element tables


def _invalid(detail: str, chain: Chain, stage: str = "fhir") -> QuarantineError:
    """The path is made of the schema's element names (never of data): safe in messages."""
    path = _path(chain)
    return QuarantineError(ReasonCode.FHIR_INVALID, f"{detail} at {path}", stage=stage, ref=path)


class FhirDeidentifier:
    """Built once per profile + linkage (rules compiled, schema cached); thread-compatible."""

    def __init__(self, profile: Profile, linkage: Linkage) -> None:
        self.profile = profile
        self.settings = profile.fhir
        self.linkage = linkage
        self.schemas: tuple[Schema, ...]
        if self.settings.version is FhirVersion.AUTO:
            self.schemas = (schema_for(FhirVersion.R4), schema_for(FhirVersion.R5))
        else:
            self.schemas = (schema_for(self.settings.version),)
        self.rules = RuleSet(list(self.settings.rules))
        self._check_rules()
        self.text = TextCleaner(
            self.settings.free_text,
            linkage.pseudonymizer,
            year_only=not linkage.shifts_dates,
            age_cap=profile.dicom.age_cap_years,
        )
        self.age_cap = profile.dicom.age_cap_years or DEFAULT_AGE_CAP
        self._encryptor: Encryptor | None = None
        if any(r.method is FhirMethod.ENCRYPT for r in self.settings.rules):
            self._encryptor = Encryptor(linkage)
        self._local = threading.local()  # per-call state: one engine serves many threads

    @property
    def schema(self) -> Schema:
        """The element tables of the version the current call reads (thread-local)."""
        schema: Schema | None = getattr(self._local, "schema", None)
        return schema or self.schemas[0]

    @property
    def _counts(self) -> Counter[str]:
        counts: Counter[str] | None = getattr(self._local, "counts", None)
        if counts is None:
            counts = self._local.counts = Counter()
        return counts

    @_counts.setter
    def _counts(self, value: Counter[str]) -> None:
        self._local.counts = value

    @property
    def _mapper(self) -> IdMapper | None:
        mapper: IdMapper | None = getattr(self._local, "mapper", None)
        return mapper

    @_mapper.setter
    def _mapper(self, value: IdMapper | None) -> None:
        self._local.mapper = value

    def _check_rules(self) -> None:
        for compiled in self.rules.rules:
            rule = compiled.rule
            if (
                rule.type is not None
                and rule.method is FhirMethod.PSEUDONYMISE
                and rule.type not in PSEUDONYMISABLE_TYPES
            ):
                raise ConfigurationError(
                    ReasonCode.PROFILE_INVALID,
                    f"fhir.rules[{compiled.index}]: pseudonymise applies to Identifier or "
                    "string-like types",
                )
            if (
                rule.path is not None
                and compiled.root not in ("*", "Resource", "DomainResource")
                and all(s.resource(compiled.root) is None for s in self.schemas)
                and not _is_datatype(compiled.root)
            ):
                raise ConfigurationError(
                    ReasonCode.PROFILE_INVALID,
                    f"fhir.rules[{compiled.index}]: unknown resource or data type at path root",
                )

    # -- public -----------------------------------------------------------------------------------
    def mapper(self, resolver: PatientResolver) -> IdMapper:
        return IdMapper(
            self.linkage,
            resolver,
            research_base_url=self.settings.research_base_url,
            patient_identifier_system=self.settings.patient_identifier_system,
        )

    def resource(
        self, resource: dict[str, Any], mapper: IdMapper, mode: ReferenceMode
    ) -> DeidOutput:
        """De-identify one resource or Bundle; with version ``auto`` the first version whose
        tables fit the input is used (reported in the output)."""
        for attempt, schema in enumerate(self.schemas):
            self._counts = Counter()
            self._mapper = mapper
            self._local.schema = schema
            try:
                out = self._resource(resource, mode, parent=None)
            except QuarantineError as error:
                if error.stage == SCHEMA_STAGE and attempt + 1 < len(self.schemas):
                    continue
                raise
            finally:
                self._local.schema = None
            return DeidOutput(out, self._counts, schema.version)
        raise AssertionError("unreachable: at least one schema")

    # -- resources --------------------------------------------------------------------------------
    def typedef(self, resource: Any, chain: Chain = ()) -> TypeDef:
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise QuarantineError(ReasonCode.FHIR_INVALID, "not a FHIR resource", stage="fhir")
        typedef = self.schema.resource(resource["resourceType"])
        if typedef is None:
            raise QuarantineError(
                ReasonCode.FHIR_INVALID,
                f"resource type not defined in FHIR {self.schema.version.value}",
                stage=SCHEMA_STAGE,
                ref=_path(chain) if chain else None,
            )
        return typedef

    def person_of(self, resource: dict[str, Any], typedef: TypeDef) -> PersonRef:
        """The person whose offset and deny-list apply to ``resource`` (NO_PATIENT if none)."""
        assert self._mapper is not None
        mapper = self._mapper
        if resource.get("resourceType") == "Patient":
            by_id = mapper.resolver.person_by_id(str(resource.get("id") or ""))
            return by_id or person_of_patient(resource, self.linkage.identity)
        keys = [k for k in PATIENT_REFERENCE_KEYS if k in resource] + [
            k for k in resource if k not in PATIENT_REFERENCE_KEYS
        ]
        for key in keys:
            element = typedef.elements.get(key)
            if element is None or element.type_name != "Reference":
                continue
            value = resource[key]
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict) and isinstance(item.get("reference"), str):
                    person = mapper.person_of_reference(item["reference"])
                    if person is not None:
                        return person
        return NO_PATIENT

    def _resource(
        self, resource: Any, mode: ReferenceMode, parent: ResourceState | None
    ) -> dict[str, Any]:
        assert self._mapper is not None
        typedef = self.typedef(resource)
        rtype = resource["resourceType"]
        if rtype == "Bundle":
            from gateway.fhir.bundle import deidentify_bundle_with

            return deidentify_bundle_with(self, resource, self._mapper, mode)
        if parent is not None:
            person = parent.person
            phi = parent.phi
        else:
            ref = self.person_of(resource, typedef)
            person = self._mapper.person(ref)
            phi = self._mapper.resolver.phi_context(ref) or PhiContext()
        state = ResourceState(rtype, person, phi, mode, contained=parent is not None)
        chain: Chain = ((rtype, rtype),)
        out = self._complex(resource, typedef, chain, [resource], state, verbatim=False)
        if self.settings.security_labels and parent is None:
            _label(out, state.labels | {"PSEUDED"})
        return out

    # -- walking ----------------------------------------------------------------------------------
    def _complex(
        self,
        obj: Any,
        typedef: TypeDef,
        chain: Chain,
        values: list[Any],
        state: ResourceState,
        *,
        verbatim: bool,
        skip: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise _invalid("complex element is not a JSON object", chain)
        out: dict[str, Any] = {}
        top = len(chain) == 1
        extensions = False
        for key, value in obj.items():
            if key in skip:
                continue
            element = typedef.elements.get(key)
            if element is None:
                if key == "fhir_comments":
                    continue
                raise _invalid("element not defined for this type", chain, SCHEMA_STAGE)
            if top and key == "id":
                out["id"] = self._resource_id(value, state, chain)
                continue
            if top and key == "resourceType":
                out[key] = value
                continue
            if key == "reference" and typedef.name == "Reference" and isinstance(value, str):
                assert self._mapper is not None
                mapped = self._mapper.reference(value, state.mode)
                if mapped is not None:
                    out[key] = mapped
                else:
                    state.labels.add("REDACTED")
                continue
            sub = chain + ((key, element.type_name),)
            if key[0] == "_":
                extensions = True
            if element.is_list:
                if not isinstance(value, list):
                    raise _invalid("repeating element is not a JSON array", sub)
                items: list[Any] = []
                for item in value:
                    if item is None and key.startswith("_"):
                        items.append(None)
                        continue
                    new = self._element(item, element, sub, values, state, verbatim)
                    if new is not None:
                        items.append(new)
                if items and (not extensions or any(i is not None for i in items)):
                    out[key] = items
            else:
                new = self._element(value, element, sub, values, state, verbatim)
                if new is not None:
                    out[key] = new
        if extensions:
            for key in [k for k in out if k.startswith("_")]:
                if key[1:] in obj and key[1:] not in out:
                    del out[key]  # the primitive went, its extensions go with it
        return out

    def _element(
        self,
        value: Any,
        element: ElementDef,
        chain: Chain,
        values: list[Any],
        state: ResourceState,
        verbatim: bool,
    ) -> Any:
        if element.type_name == "Resource":
            return self._resource(value, state.mode, parent=state)
        values.append(value)
        try:
            if element.is_primitive and isinstance(value, (dict, list)):
                raise _invalid("primitive element is not a JSON primitive", chain, SCHEMA_STAGE)
            rule = None if verbatim else self.rules.match(chain, values)
            if rule is None or verbatim:
                if element.is_primitive:
                    return value
                return self._complex(
                    value, self.schema.complex(element), chain, values, state, verbatim=verbatim
                )
            return self._apply(rule, value, element, chain, values, state)
        finally:
            values.pop()

    def _resource_id(self, value: Any, state: ResourceState, chain: Chain) -> str:
        if not isinstance(value, str):
            raise _invalid("id is not a string", chain)
        assert self._mapper is not None
        if state.contained:
            return self._mapper.contained_id(value)
        if state.resource_type == "Patient":
            return state.person.patient_id
        return self._mapper.resource_id(state.resource_type, value)

    # -- methods ----------------------------------------------------------------------------------
    def _apply(
        self,
        compiled: CompiledRule,
        value: Any,
        element: ElementDef,
        chain: Chain,
        values: list[Any],
        state: ResourceState,
    ) -> Any:
        rule = compiled.rule
        method = rule.method
        type_name = element.type_name
        if method is FhirMethod.KEEP:
            if element.is_primitive:
                return value
            return self._complex(
                value, self.schema.complex(element), chain, values, state, verbatim=True
            )
        if method is FhirMethod.REDACT:
            state.labels.add("REDACTED")
            return None
        if method is FhirMethod.SUBSTITUTE:
            state.labels.add("MASKED")
            return copy.deepcopy(rule.value)
        if method is FhirMethod.DATE_SHIFT:
            if type_name in DATE_TYPES:
                if not isinstance(value, str):
                    raise _invalid("date is not a string", chain)
                if self.linkage.shifts_dates:
                    shifted = shift_fhir_date(value, state.person.date_offset_days)
                    if shifted is None:
                        raise _invalid("date value not understood", chain)
                    return shifted
                return transform_date(
                    value, type_name, self.linkage, state.person.date_offset_days, _path(chain)
                )
            if not element.is_primitive:
                return self._walk(value, element, chain, values, state)
            return self._fail_closed(state)
        if method is FhirMethod.PSEUDONYMISE:
            state.labels.add("PSEUDED")
            if type_name == "Identifier":
                return self._identifier(
                    value, element, chain, values, state, rule.as_, _path(chain)
                )
            if element.is_primitive and isinstance(value, str):
                return pseudonymise_primitive(
                    value, rule.as_, self.linkage, _path(chain), state.person
                )
            return self._fail_closed(state)
        if method is FhirMethod.GENERALIZE:
            state.labels.add("ABSTRED")
            return self._generalize(compiled, value, element, chain, values, state, _path(chain))
        if method is FhirMethod.PERTURB:
            state.labels.add("MASKED")
            assert rule.range is not None
            if type_name in NUMBER_TYPES:
                return perturb_number(value, rule.range, self.linkage, _path(chain))
            if type_name in ("Quantity", "Age", "Duration", "Count", "Distance", "Money"):
                walked = self._walk(value, element, chain, values, state)
                if "value" in walked:
                    walked["value"] = perturb_number(
                        walked["value"], rule.range, self.linkage, _path(chain)
                    )
                return walked
            return self._fail_closed(state)
        if method is FhirMethod.ENCRYPT:
            state.labels.add("MASKED")
            if type_name in ENCRYPTABLE_TYPES and isinstance(value, str) and self._encryptor:
                return self._encryptor.encrypt(value)
            return self._fail_closed(state)
        if method is FhirMethod.CLEAN:
            return self._clean(value, element, chain, values, state)
        raise ConfigurationError(ReasonCode.PROFILE_INVALID, "unknown FHIR method")

    def _fail_closed(self, state: ResourceState) -> None:
        """A method that does not apply to the element's type removes the element."""
        state.labels.add("REDACTED")

    def _walk(
        self, value: Any, element: ElementDef, chain: Chain, values: list[Any], state: ResourceState,
        skip: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:  # fmt: skip
        return self._complex(
            value, self.schema.complex(element), chain, values, state, verbatim=False, skip=skip
        )

    def _identifier(
        self,
        value: Any,
        element: ElementDef,
        chain: Chain,
        values: list[Any],
        state: ResourceState,
        kind: PseudonymKind,
        path: str,
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _invalid("Identifier is not a JSON object", chain)
        replaced = pseudonymise_identifier(
            value,
            linkage=self.linkage,
            path=path,
            resource_type=state.resource_type,
            kind=kind,
            patient_identifier_system=self.settings.patient_identifier_system,
            person_for_patient=state.person if state.resource_type == "Patient" else None,
        )
        rest = self._walk(value, element, chain, values, state, skip=frozenset({"value", "system"}))
        for key in ("system", "value"):
            if key in replaced:
                rest[key] = replaced[key]
        return rest

    def _generalize(
        self,
        compiled: CompiledRule,
        value: Any,
        element: ElementDef,
        chain: Chain,
        values: list[Any],
        state: ResourceState,
        path: str,
    ) -> Any:
        granularity = compiled.rule.granularity
        assert granularity is not None
        if element.type_name in DATE_TYPES and isinstance(value, str):
            if granularity is Granularity.AGE_CAP:
                return age_capped_year(value, self.age_cap, dt.date.today(), path)
            return generalize_date(value, element.type_name, granularity, path)
        if element.type_name == "Address" and isinstance(value, dict):
            kept = generalize_address(value, granularity)
            if "period" in value:
                kept["period"] = self._walk(value, element, chain, values, state)["period"]
            return kept or None
        if (
            element.type_name == "Age"
            and granularity is Granularity.AGE_CAP
            and isinstance(value, dict)
        ):
            walked = self._walk(value, element, chain, values, state)
            age = walked.get("value")
            unit = str(walked.get("code") or walked.get("unit") or "a")
            if isinstance(age, (int, float)) and unit in ("a", "yr", "y", "years", "year"):
                if age > self.age_cap:
                    walked["value"] = self.age_cap + 1
                    walked["comparator"] = ">="
            elif isinstance(age, (int, float)):
                return self._fail_closed(state)  # ages in days/months: not capped, not kept
            return walked
        return self._fail_closed(state)

    def _clean(
        self, value: Any, element: ElementDef, chain: Chain, values: list[Any], state: ResourceState
    ) -> Any:
        type_name = element.type_name
        key = state.person.person_key
        offset = state.person.date_offset_days
        if type_name in TEXT_TYPES or type_name == "xhtml":
            if not isinstance(value, str):
                raise _invalid("text is not a string", chain)
            before = sum(self._counts.values())
            if type_name == "xhtml":
                out = self.text.clean_xhtml(value, state.phi, key, self._counts, offset)
            else:
                out = self.text.clean(value, state.phi, key, self._counts, offset)
            if sum(self._counts.values()) != before:
                state.labels.add("MASKED")
            return out
        if type_name == "Narrative":
            walked = self._walk(value, element, chain, values, state, skip=frozenset({"div"}))
            if isinstance(value, dict) and isinstance(value.get("div"), str):
                walked["div"] = self.text.clean_xhtml(
                    value["div"], state.phi, key, self._counts, offset
                )
            return walked
        if type_name == "Attachment":
            if not isinstance(value, dict):
                raise _invalid("Attachment is not a JSON object", chain)
            cleaned = self.text.clean_attachment(value, state.phi, key, self._counts, offset)
            if cleaned is None:
                return None
            done = frozenset({"data", "title", "size", "url", "hash", "contentType", "_url"})
            rest = self._walk(cleaned, element, chain, values, state, skip=done)
            for k in ("contentType", "data", "size", "title"):
                if k in cleaned:
                    rest[k] = cleaned[k]
            return rest
        if type_name == "Annotation":
            if not isinstance(value, dict):
                raise _invalid("Annotation is not a JSON object", chain)
            rest = self._walk(
                value, element, chain, values, state, skip=frozenset({"text", "authorString"})
            )
            if isinstance(value.get("text"), str):
                rest["text"] = self.text.clean(value["text"], state.phi, key, self._counts, offset)
            return rest
        if not element.is_primitive:
            return self._walk(value, element, chain, values, state)
        return value  # codes, numbers, booleans: nothing to clean


def _label(resource: dict[str, Any], codes: set[str]) -> None:
    meta = dict(resource.get("meta") or {})
    security = list(meta.get("security") or [])
    present = {(s.get("system"), s.get("code")) for s in security if isinstance(s, dict)}
    for code in sorted(codes):
        if (SECURITY_SYSTEM, code) not in present:
            security.append(
                {"system": SECURITY_SYSTEM, "code": code, "display": SECURITY_DISPLAY[code]}
            )
    meta["security"] = security
    resource["meta"] = meta
    if next(iter(resource)) != "resourceType":
        return
    # keep resourceType/id first, meta next, for readable output
    ordered: dict[str, Any] = {
        k: resource[k] for k in ("resourceType", "id", "meta") if k in resource
    }
    ordered.update({k: v for k, v in resource.items() if k not in ordered})
    resource.clear()
    resource.update(ordered)


def _is_datatype(name: str) -> bool:
    try:
        from fhir.resources.R4B import get_fhir_model_class

        get_fhir_model_class(name)
        return True
    except (KeyError, ValueError, AttributeError, ImportError):
        return name in ("Element", "BackboneElement")
