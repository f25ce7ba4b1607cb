"""The native FHIRPath filters agree with fhirpathpy on a table of cases."""

from __future__ import annotations

from typing import Any

import fhirpathpy
import pytest

from gateway.fhir.fastpath import compile_fast

SS = {
    "type": {"coding": [{"code": "SS"}]},
    "system": "http://hl7.org/fhir/sid/us-ssn",
    "value": "1",
}
MR = {"type": {"coding": [{"code": "XX"}, {"code": "MR"}]}, "system": "http://h", "value": "2"}
EXT = {"url": "http://hl7.org/fhir/StructureDefinition/geolocation", "extension": []}
NOTHING: dict[str, Any] = {}
TWO_SYSTEMS = {"system": ["a", "b"]}

EXPRESSIONS = [
    "system = 'http://hl7.org/fhir/sid/us-ssn'",
    "system = 'http://h'",
    "url = 'http://hl7.org/fhir/StructureDefinition/geolocation'",
    "type.coding.exists(code = 'SS' or code = 'DL' or code = 'PPN')",
    "type.coding.exists(code = 'MR')",
    "type.coding.exists(code = 'ACSN')",
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
@pytest.mark.parametrize("value", [SS, MR, EXT, NOTHING, TWO_SYSTEMS])
def test_agrees_with_fhirpathpy(expression: str, value: Any) -> None:
    fast = compile_fast(expression)
    assert fast is not None
    expected = fhirpathpy.evaluate(value, expression)
    assert fast(value) == expected


@pytest.mark.parametrize(
    "expression",
    ["system != 'x'", "type.coding.exists(code = 'A' or system = 'B')", "value.length() > 3"],
)
def test_other_shapes_fall_back(expression: str) -> None:
    assert compile_fast(expression) is None
