"""The rule methods (keep, redact, pseudonymise, dateShift, substitute, generalize, perturb,
encrypt, clean) applied to one element. Mixed into :class:`gateway.fhir.engine.FhirDeidentifier`,
which supplies the walk (``_complex``); the per-call state (schema, span counts) comes down the
walk in ``state.walk``."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from gateway.errors import ConfigurationError, ReasonCode
from gateway.fhir.freetext import TextCleaner
from gateway.fhir.rules import Chain, CompiledRule
from gateway.fhir.schema import DATE_TYPES, ElementDef, TypeDef
from gateway.fhir.state import (
    ENCRYPTABLE_TYPES,
    NUMBER_TYPES,
    TEXT_TYPES,
    ResourceState,
    element_path,
    invalid,
)
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
from gateway.linkage.context import Linkage
from gateway.linkage.dates import shift_fhir_date
from gateway.profiles.fhir_model import FhirMethod, FhirSettings, Granularity, PseudonymKind


class RuleMethods:
    """What each method does to the element a rule matched."""

    linkage: Linkage
    settings: FhirSettings
    text: TextCleaner
    age_cap: int
    _encryptor: Encryptor | None

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
        raise NotImplementedError

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
                value, state.walk.schema.complex(element), chain, values, state, verbatim=True
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
                    raise invalid("date is not a string", chain)
                if self.linkage.shifts_dates:
                    shifted = shift_fhir_date(value, state.person.date_offset_days)
                    if shifted is None:
                        raise invalid("date value not understood", chain)
                    return shifted
                return transform_date(
                    value,
                    type_name,
                    self.linkage,
                    state.person.date_offset_days,
                    element_path(chain),
                )
            if not element.is_primitive:
                return self._walk(value, element, chain, values, state)
            return self._fail_closed(state)
        if method is FhirMethod.PSEUDONYMISE:
            state.labels.add("PSEUDED")
            if type_name == "Identifier":
                return self._identifier(
                    value, element, chain, values, state, rule.as_, element_path(chain)
                )
            if element.is_primitive and isinstance(value, str):
                return pseudonymise_primitive(
                    value, rule.as_, self.linkage, element_path(chain), state.person
                )
            return self._fail_closed(state)
        if method is FhirMethod.GENERALIZE:
            state.labels.add("ABSTRED")
            return self._generalize(
                compiled, value, element, chain, values, state, element_path(chain)
            )
        if method is FhirMethod.PERTURB:
            state.labels.add("MASKED")
            assert rule.range is not None
            if type_name in NUMBER_TYPES:
                return perturb_number(value, rule.range, self.linkage, element_path(chain))
            if type_name in ("Quantity", "Age", "Duration", "Count", "Distance", "Money"):
                walked = self._walk(value, element, chain, values, state)
                if "value" in walked:
                    walked["value"] = perturb_number(
                        walked["value"], rule.range, self.linkage, element_path(chain)
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
            value,
            state.walk.schema.complex(element),
            chain,
            values,
            state,
            verbatim=False,
            skip=skip,
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
            raise invalid("Identifier is not a JSON object", chain)
        for key in ("system", "value"):  # read here, not walked: their JSON type is checked here
            if not isinstance(value.get(key, ""), str):
                raise invalid(
                    "primitive element has the wrong JSON type", chain + ((key, "string"),)
                )
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
                raise invalid("text is not a string", chain)
            before = sum(state.walk.counts.values())
            if type_name == "xhtml":
                out = self.text.clean_xhtml(value, state.phi, key, state.walk.counts, offset)
            else:
                out = self.text.clean(value, state.phi, key, state.walk.counts, offset)
            if sum(state.walk.counts.values()) != before:
                state.labels.add("MASKED")
            return out
        if type_name == "Narrative":
            walked = self._walk(value, element, chain, values, state, skip=frozenset({"div"}))
            if isinstance(value, dict) and isinstance(value.get("div"), str):
                walked["div"] = self.text.clean_xhtml(
                    value["div"], state.phi, key, state.walk.counts, offset
                )
            return walked
        if type_name == "Attachment":
            if not isinstance(value, dict):
                raise invalid("Attachment is not a JSON object", chain)
            cleaned = self.text.clean_attachment(value, state.phi, key, state.walk.counts, offset)
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
                raise invalid("Annotation is not a JSON object", chain)
            rest = self._walk(
                value, element, chain, values, state, skip=frozenset({"text", "authorString"})
            )
            if isinstance(value.get("text"), str):
                rest["text"] = self.text.clean(
                    value["text"], state.phi, key, state.walk.counts, offset
                )
            return rest
        if not element.is_primitive:
            return self._walk(value, element, chain, values, state)
        return value  # codes, numbers, booleans: nothing to clean
