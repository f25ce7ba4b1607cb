"""The FHIR de-identifier: walks plain JSON with the schema's types and applies the profile rules.

Invariants that no rule can switch off (they keep the output linked and resolvable): resource
ids, ``Reference.reference``, contained ids, bundle fullUrls/request urls (see
:mod:`gateway.fhir.references`) and ``meta.security`` labels. Everything else goes through the
rules (profile first, then :data:`gateway.fhir.rules.BUILTIN_RULES`); an element no rule matches
is kept (codes, values and units of clinical data keep their utility).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from gateway.errors import QuarantineError, ReasonCode
from gateway.fhir.bundle_walk import deidentify_bundle
from gateway.fhir.freetext import TextCleaner
from gateway.fhir.methods import RuleMethods
from gateway.fhir.references import IdMapper, ReferenceMode
from gateway.fhir.resolver import PatientResolver, person_of_patient
from gateway.fhir.rules import Chain
from gateway.fhir.schema import ElementDef, Schema, TypeDef
from gateway.fhir.state import (
    MAX_ELEMENT_DEPTH,
    NO_PATIENT,
    SCHEMA_STAGE,
    DeidOutput,
    ResourceState,
    WalkContext,
    add_security_labels,
    element_path,
    invalid,
    too_deep,
)
from gateway.fhir.values import Encryptor
from gateway.linkage.context import Linkage
from gateway.linkage.issued import IssuedKind, note
from gateway.linkage.pseudonym import PersonRef
from gateway.profiles.fhir_model import FhirMethod
from gateway.profiles.model import Profile
from gateway.text.context import PhiContext

if TYPE_CHECKING:  # the compiler imports gateway.fhir: the engine asks for it when it runs
    from gateway.profiles.compiler import CompiledFhir, CompiledProfile

PATIENT_REFERENCE_KEYS = ("subject", "patient", "beneficiary", "individual", "target", "for")
DEFAULT_AGE_CAP = 89


class FhirDeidentifier(RuleMethods):
    """Built once per profile + linkage (rules compiled, schema cached). It holds no per-call
    state: the mapper, the schema in use and the span counts travel down the walk in a
    :class:`WalkContext`, so one instance serves many threads at once."""

    def __init__(
        self, profile: Profile, linkage: Linkage, compiled: CompiledFhir | None = None
    ) -> None:
        """``compiled``: what the profile compiler built (else the profile is compiled here;
        ProfileInvalid when it has problems). Nothing is checked here."""
        if compiled is None:
            from gateway.profiles.compiler import compile_fhir

            compiled = compile_fhir(profile)
        self.profile = profile
        self.settings = compiled.settings
        self.linkage = linkage
        self.schemas: tuple[Schema, ...] = compiled.schemas
        self.rules = compiled.rules
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

    @classmethod
    def from_compiled(cls, compiled: CompiledProfile, linkage: Linkage) -> FhirDeidentifier:
        return cls(compiled.profile, linkage, compiled.fhir)

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
            walk = WalkContext(mapper, schema, mode, Counter())
            try:
                out = self.walk_resource(resource, walk)
            except QuarantineError as error:
                if error.stage == SCHEMA_STAGE and attempt + 1 < len(self.schemas):
                    continue
                raise
            return DeidOutput(out, walk.counts, schema.version)
        raise AssertionError("unreachable: at least one schema")

    # -- resources --------------------------------------------------------------------------------
    def typedef(self, resource: Any, schema: Schema, chain: Chain = ()) -> TypeDef:
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise QuarantineError(ReasonCode.FHIR_INVALID, "not a FHIR resource", stage="fhir")
        typedef = schema.resource(resource["resourceType"])
        if typedef is None:
            raise QuarantineError(
                ReasonCode.FHIR_INVALID,
                f"resource type not defined in FHIR {schema.version.value}",
                stage=SCHEMA_STAGE,
                ref=element_path(chain) if chain else None,
            )
        return typedef

    def person_of(self, resource: dict[str, Any], typedef: TypeDef, mapper: IdMapper) -> PersonRef:
        """The person whose offset and deny-list apply to ``resource`` (NO_PATIENT if none)."""
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

    def walk_resource(
        self, resource: Any, walk: WalkContext, parent: ResourceState | None = None
    ) -> dict[str, Any]:
        """One resource (a Bundle: :func:`gateway.fhir.bundle_walk.deidentify_bundle`); ``parent``
        is the resource that contains it (its person and deny-list apply)."""
        typedef = self.typedef(resource, walk.schema)
        rtype = resource["resourceType"]
        if rtype == "Bundle":
            return deidentify_bundle(self, resource, walk)
        if parent is not None:
            person = parent.person
            phi = parent.phi
        else:
            ref = self.person_of(resource, typedef, walk.mapper)
            person = walk.mapper.person(ref)
            phi = walk.mapper.resolver.phi_context(ref) or PhiContext()
        state = ResourceState(walk, rtype, person, phi, contained=parent is not None)
        chain: Chain = ((rtype, rtype),)
        out = self._complex(resource, typedef, chain, [resource], state, verbatim=False)
        if self.settings.security_labels and parent is None:
            add_security_labels(out, state.labels | {"PSEUDED"})
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
            raise invalid("complex element is not a JSON object", chain)
        if len(chain) > MAX_ELEMENT_DEPTH:
            raise too_deep(chain)
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
                raise invalid("element not defined for this type", chain, SCHEMA_STAGE)
            if top and key == "id":
                out["id"] = self._resource_id(value, state, chain)
                continue
            if top and key == "resourceType":
                out[key] = value
                continue
            if key == "reference" and typedef.name == "Reference" and isinstance(value, str):
                mapped = state.walk.mapper.reference(value, state.mode)
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
                    raise invalid("repeating element is not a JSON array", sub)
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
            return self.walk_resource(value, state.walk, parent=state)
        values.append(value)
        try:
            if element.is_primitive and not isinstance(value, element.json_types):
                raise invalid(_wrong_type(value), chain, SCHEMA_STAGE)
            rule = None if verbatim else self.rules.match(chain, values)
            if rule is None or verbatim:
                if element.is_primitive:
                    return value
                return self._complex(
                    value,
                    state.walk.schema.complex(element),
                    chain,
                    values,
                    state,
                    verbatim=verbatim,
                )
            return self._apply(rule, value, element, chain, values, state)
        finally:
            values.pop()

    def _resource_id(self, value: Any, state: ResourceState, chain: Chain) -> str:
        if not isinstance(value, str):
            raise invalid("id is not a string", chain)
        if state.contained:
            return state.walk.mapper.contained_id(value)
        if state.resource_type == "Patient":
            new = state.person.patient_id
            note(IssuedKind.FHIR_ID, f"Patient/{new}", f"Patient/{value}")
            return new
        return state.walk.mapper.resource_id(state.resource_type, value)

    # -- methods ----------------------------------------------------------------------------------


def _wrong_type(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "primitive element is not a JSON primitive"
    return "primitive element has the wrong JSON type"
