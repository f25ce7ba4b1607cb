"""The profile compiler (issue 10): every class of problem a later stage would refuse is found
by ``compile_profile`` / ``profile validate``, with file:line, all in one run; ``deidentify``
and ``serve`` refuse such a profile before doing anything; the stages take what it built.

Each case is a small profile written here; the line a problem must name is marked ``# <-``.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main
from gateway.errors import ReasonCode
from gateway.fhir import element_index as element_index_module
from gateway.fhir import paths
from gateway.fhir.element_index import INDEX, element_index
from gateway.fhir.schema import Schema
from gateway.linkage.context import Linkage
from gateway.linkage.keys import PseudonymKey
from gateway.profiles import compiler
from gateway.profiles.compiler import (
    ProfileInvalid,
    compile_loaded,
    compile_profile,
    compile_text,
)
from gateway.profiles.fhir_model import FhirVersion
from gateway.profiles.loader import parse_profile

REPO = Path(__file__).resolve().parents[1]
HEAD = 'name: t\nversion: "1"\n'
MARK = "# <-"

# case -> (profile body, where the problem is, words its message must contain)
CASES: dict[str, tuple[str, str, list[str]]] = {
    "dicom-unknown-keyword": (
        "dicom:\n  overrides:\n    - attribute: AccesionNumber  # <-\n      action: remove\n",
        "dicom.overrides[0].attribute", ["neither a DICOM keyword", "(0010,0020)"],
    ),
    "dicom-bad-tag": (
        "dicom:\n  overrides:\n    - attribute: (0010,00ZZ)  # <-\n      action: remove\n",
        "dicom.overrides[0].attribute", ["neither a DICOM keyword"],
    ),
    "dicom-bad-action": (
        "dicom:\n  overrides:\n    - attribute: PatientID\n      action: obliterate  # <-\n",
        "dicom.overrides[0].action", ["not allowed", "allowed:", "patient-pseudonym"],
    ),
    "dicom-set-without-value": (
        "dicom:\n  overrides:\n    - attribute: PatientID  # <-\n      action: set\n",
        "dicom.overrides[0]", ["'set' needs a 'value'"],
    ),
    "dicom-duplicate-override": (
        (
            "dicom:\n  overrides:\n    - attribute: PatientAge\n      action: remove\n"
            "    - attribute: (0010,1010)  # <-\n      action: keep\n"
        ),
        "dicom.overrides[1].attribute", ["already overridden by overrides[0]"],
    ),
    "dicom-age-cap-without-cap": (
        "dicom:\n  overrides:\n    - attribute: PatientAge\n      action: age-cap  # <-\n",
        "dicom.overrides[0].action", ["age-cap needs dicom.age_cap_years"],
    ),
    "dicom-unknown-option": (
        "dicom:\n  options:\n    - clean_graphic  # <-\n",
        "dicom.options[0]", ["not allowed", "clean_graphics", "retain_uids"],
    ),
    "dicom-conflicting-date-options": (
        (
            "dicom:\n  options:  # <-\n    - retain_longitudinal_full_dates\n"
            "    - retain_longitudinal_modified_dates\n"
        ),
        "dicom.options", ["choose one of"],
    ),
    "dicom-crvf-option": (
        "dicom:\n  options:\n    - clean_descriptors\n    - clean_recognizable_visual_features  # <-\n",
        "dicom.options[1]", ["Clean Recognizable Visual Features", "remove the option"],
    ),
    "dicom-unknown-setting": (
        "dicom:\n  compound_action: preserve-conformance  # <-\n",
        "dicom.compound_action", ["unknown setting", "compound_actions"],
    ),
    "dicom-safe-private-offset": (
        (
            "dicom:\n  safe_private:\n    - creator: SIEMENS CSA HEADER\n      group: 0x0029\n"
            "      elements:\n        - 0x10\n        - 0x110  # <-\n"
        ),
        "dicom.safe_private[0].elements[1]", ["out of range", "0x00-0xFF"],
    ),
    "dicom-safe-private-group": (
        "dicom:\n  safe_private:\n    - creator: X\n      group: 0x0010  # <-\n      elements: [1]\n",
        "dicom.safe_private[0].group", ["not a private group", "odd"],
    ),
    "pixel-unknown-setting": (
        "dicom:\n  pixels:\n    mode: all-text\n    ocr_lang: eng  # <-\n",
        "dicom.pixels.ocr_lang", ["unknown setting", "full_verification", "regions"],
    ),
    "pixel-bad-mode": (
        "dicom:\n  pixels:\n    mode: everything  # <-\n",
        "dicom.pixels.mode", ["sensitive-only|all-text"],
    ),
    "pixel-region-unknown-key": (
        (
            "dicom:\n  pixels:\n    regions:\n      - match: {Manufacturer: ACME}\n"
            "        boxes: [[0, 0, 10, 10]]\n        colour: red  # <-\n"
        ),
        "dicom.pixels.regions[0].colour", ["unknown setting", "boxes, keep, match, why"],
    ),
    "pixel-region-empty-box": (
        (
            "dicom:\n  pixels:\n    regions:\n      - match: {Manufacturer: ACME}\n"
            "        boxes:\n          - [0, 0, 0, 10]  # <-\n"
        ),
        "dicom.pixels.regions[0].boxes[0]", ["x1 > x0"],
    ),
    "pixel-region-box-not-four-numbers": (
        (
            "dicom:\n  pixels:\n    regions:\n      - match: {Manufacturer: ACME}\n"
            "        keep:\n          - [0, 0, 10]  # <-\n"
        ),
        "dicom.pixels.regions[0].keep[0]", ["four numbers [x0, y0, x1, y1]"],
    ),
    "pixel-region-unknown-keyword": (
        (
            "dicom:\n  pixels:\n    regions:\n      - match:\n          Manufactrer: ACME  # <-\n"
            "        boxes: [[0, 0, 10, 10]]\n"
        ),
        "dicom.pixels.regions[0].match.Manufactrer", ["not a DICOM keyword", "never match"],
    ),
    "pixel-region-does-nothing": (
        "dicom:\n  pixels:\n    regions:\n      - match: {Manufacturer: ACME}  # <-\n",
        "dicom.pixels.regions[0]", ["without boxes or keep"],
    ),
    "fhir-path-root-unknown": (
        "fhir:\n  rules:\n    - path: Patinet.name  # <-\n      method: redact\n",
        "fhir.rules[0].path", ["'Patinet' is not a resource or data type", "'Patient'"],
    ),
    "fhir-path-segment-unknown": (
        "fhir:\n  rules:\n    - path: Patient.nmae  # <-\n      method: redact\n",
        "fhir.rules[0].path", ["'nmae' is not an element of Patient", "'name'", "birthDate"],
    ),
    "fhir-path-deep-segment-unknown": (
        "fhir:\n  rules:\n    - path: Observation.valueQuantity.vlaue  # <-\n      method: redact\n",
        "fhir.rules[0].path", ["'vlaue' is not an element of Quantity", "unit"],
    ),
    "fhir-path-datatype-segment-unknown": (
        "fhir:\n  rules:\n    - method: redact\n      path: Identifier.sytem  # <-\n",
        "fhir.rules[0].path", ["'sytem' is not an element of Identifier", "'system'"],
    ),
    "fhir-path-past-a-primitive": (
        "fhir:\n  rules:\n    - path: Patient.birthDate.extension  # <-\n      method: redact\n",
        "fhir.rules[0].path", ["primitive (date)", "cannot go on"],
    ),
    "fhir-path-any-resource-unknown": (
        "fhir:\n  rules:\n    - path: '*.descriptoin'  # <-\n      method: clean\n",
        "fhir.rules[0].path", ["no resource type has 'descriptoin'"],
    ),
    "fhir-path-version": (
        (
            "fhir:\n  version: R4\n  rules:\n    - path: ActorDefinition.title  # <-\n"
            "      method: redact\n"
        ),
        "fhir.rules[0].path", ["'ActorDefinition'", "FHIR R4"],
    ),
    "fhir-path-syntax": (
        "fhir:\n  rules:\n    - path: Patient.name.first()  # <-\n      method: redact\n",
        "fhir.rules[0].path", ["only element names and .where(...)", "allowed:"],
    ),
    "fhir-path-choice-syntax": (
        "fhir:\n  rules:\n    - path: Observation.value[x]  # <-\n      method: redact\n",
        "fhir.rules[0].path", ["choice element is named by its type", "valueString"],
    ),
    "fhir-path-unbalanced": (
        "fhir:\n  rules:\n    - path: Patient.name.where(  # <-\n      method: redact\n",
        "fhir.rules[0].path", ["not well formed"],
    ),
    "fhir-path-filter-does-not-parse": (
        "fhir:\n  rules:\n    - path: Patient.name.where(use = @@)  # <-\n      method: redact\n",
        "fhir.rules[0].path", ["FHIRPath filter does not parse"],
    ),
    "fhir-type-unknown": (
        "fhir:\n  rules:\n    - type: HumanNme  # <-\n      method: redact\n",
        "fhir.rules[0].type", ["'HumanNme' is not a data type", "'HumanName'"],
    ),
    "fhir-method-not-for-type": (
        "fhir:\n  rules:\n    - type: HumanName\n      method: pseudonymise  # <-\n",
        "fhir.rules[0].method", ["pseudonymise does not apply to HumanName", "Identifier"],
    ),
    "fhir-method-not-for-path-type": (
        "fhir:\n  rules:\n    - path: Patient.address\n      method: pseudonymise  # <-\n",
        "fhir.rules[0].method", ["pseudonymise does not apply to Address", "string"],
    ),
    "fhir-method-missing-parameter": (
        "fhir:\n  rules:\n    - path: Patient.name  # <-\n      method: substitute\n",
        "fhir.rules[0]", ["'substitute' needs a 'value'"],
    ),
    "fhir-unknown-method": (
        "fhir:\n  rules:\n    - path: Patient.name\n      method: obliterate  # <-\n",
        "fhir.rules[0].method", ["not allowed", "pseudonymise"],
    ),
    "fhir-unknown-setting": (
        "fhir:\n  free_txt: {nlp: false}  # <-\n",
        "fhir.free_txt", ["unknown setting", "free_text"],
    ),
    "namespace-bad-name": (
        "linkage:\n  identity:\n    namespaces:\n      - name: 'local mrn'  # <-\n",
        "linkage.identity.namespaces[0].name", ["should match pattern"],
    ),
    "namespace-declared-twice": (
        "linkage:\n  identity:\n    namespaces:\n      - name: mrn\n      - name: mrn  # <-\n",
        "linkage.identity.namespaces[1].name", ["already declared by namespaces[0]"],
    ),
    "namespace-issuer-in-two": (
        (
            "linkage:\n  identity:\n    namespaces:\n      - name: a\n        dicom_issuers: [HOSP]\n"
            "      - name: b\n        dicom_issuers:\n          - HOSP  # <-\n"
        ),
        "linkage.identity.namespaces[1].dicom_issuers[0]", ["already declared by namespaces[0]"],
    ),
    "namespace-system-twice": (
        (
            "linkage:\n  identity:\n    namespaces:\n      - name: a\n        fhir_systems:\n"
            "          - urn:oid:1.2.3\n          - urn:oid:1.2.3  # <-\n"
        ),
        "linkage.identity.namespaces[0].fhir_systems[1]", ["already declared by this namespace"],
    ),
    "linkage-bad-key-id": (
        "linkage:\n  key_id: 'a key'  # <-\n",
        "linkage.key_id", ["should match pattern"],
    ),
}  # fmt: skip


def _text(body: str) -> tuple[str, int]:
    text = HEAD + body
    marked = [i for i, line in enumerate(text.splitlines(), start=1) if MARK in line]
    assert len(marked) == 1, body
    return text, marked[0]


def _problems(text: str, filename: str = "p.yaml") -> list[str]:
    with pytest.raises(ProfileInvalid) as info:
        compile_text(text, filename)
    assert info.value.reason is ReasonCode.PROFILE_INVALID
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_class_of_problem_is_found_with_file_and_line(case: str) -> None:
    body, where, words = CASES[case]
    text, line = _text(body)
    problems = _problems(text)
    prefix = f"p.yaml:{line}: {where}: "
    found = [p for p in problems if p.startswith(prefix)]
    assert found, problems
    for word in words:
        assert word in found[0][len(prefix) :], found[0]


def test_auto_accepts_a_path_of_any_supported_version() -> None:
    body = "fhir:\n  version: auto\n  rules:\n    - path: ActorDefinition.title\n      method: redact\n"
    compiled = compile_text(HEAD + body)
    assert [s.version for s in compiled.fhir.schemas] == [FhirVersion.R4, FhirVersion.R5]
    with pytest.raises(ProfileInvalid):
        compile_text(HEAD + body.replace("auto", "R4"))
    assert compile_text(HEAD + body.replace("auto", "R5")).fhir.schemas[0].version is FhirVersion.R5


@pytest.mark.parametrize(
    "path",
    ["Observation.valueQuantity.value", "Patient.contact.name.family", "*.description",
     "Identifier.where(system = 'x')", "Reference.display", "Patient._birthDate.extension",
     "Bundle.entry.resource", "Extension.valueString", "Meta.source"],
)  # fmt: skip
def test_real_paths_compile(path: str) -> None:
    compile_text(HEAD + f'fhir:\n  rules:\n    - path: "{path}"\n      method: redact\n')


def test_every_problem_of_every_section_in_one_run(tmp_path: Path) -> None:
    """A schema error does not hide the checks of the other sections (or of the same one)."""
    body = (
        "dicom:\n  options: [clean_recognizable_visual_features]\n"
        "  compound_action: x\n"
        "fhir:\n  rules:\n    - path: Patient.nmae\n      method: redact\n"
        "    - path: Patinet.name\n      method: redact\n"
        "linkage:\n  key_id: 'a key'\n"
    )
    path = tmp_path / "many.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    with pytest.raises(ProfileInvalid) as info:
        compile_profile(path)
    lines = [p.line or 0 for p in info.value.problems]
    assert lines == sorted(lines) and 0 not in lines
    wheres = {p.where for p in info.value.problems}
    assert wheres == {
        "dicom.options[0]", "dicom.compound_action", "fhir.rules[0].path", "fhir.rules[1].path",
        "linkage.key_id",
    }  # fmt: skip
    assert all(p.file == str(path) for p in info.value.problems)


@pytest.mark.parametrize("name", ["basic", "research", "safe-harbor"])
def test_bundled_profiles_compile_to_every_artefact(name: str) -> None:
    compiled = compile_profile(name)
    profile = compiled.profile
    assert compiled.source.file.endswith(f"{name}.yaml")
    assert compiled.dicom.rules.method_description == profile.method_description
    profile_rules = [r for r in compiled.fhir.rules.rules if not r.builtin]
    assert [r.rule for r in profile_rules] == list(profile.fhir.rules)
    wants_pixels = "clean_pixel_data" in {o.value for o in profile.dicom.options}
    assert (compiled.dicom.pixels is not None) == wants_pixels
    assert [n.name for n in compiled.linkage.namespaces] == [
        n.name for n in profile.linkage.identity.namespaces
    ]


def test_pixel_regions_are_typed() -> None:
    from gateway.pixels.model import Box

    body = (
        "dicom:\n  options: [clean_pixel_data]\n  pixels:\n    regions:\n"
        "      - match: {Manufacturer: ACME, Rows: 480}\n        boxes: [[0, 0, 640, 40]]\n"
        "        keep: [[0, 40, 640, 480]]\n"
    )
    pixels = compile_text(HEAD + body).dicom.pixels
    assert pixels is not None
    (region,) = pixels.regions
    assert region.match == (("Manufacturer", "ACME"), ("Rows", "480"))
    assert region.boxes == (Box(0, 0, 640, 40),) and region.keep == (Box(0, 40, 640, 480),)


def test_environment_refusals_are_problems_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """NLP asked for but not installed, encrypt without cryptography, deid's filters without
    deid: refused at compile."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(compiler, "_presidio_missing", lambda model: "spacy")
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name in ("cryptography", "deid") else real_find_spec(name, *a),
    )  # fmt: skip
    body = (
        "dicom:\n  options: [clean_pixel_data]\n  pixels:\n    ner: true\n    deid_filters: true\n"
        "fhir:\n  free_text:\n    nlp: true\n  rules:\n    - path: Observation.valueString\n"
        "      method: encrypt\n"
    )
    problems = _problems(HEAD + body)
    assert "p.yaml:6: dicom.pixels.ner: needs spacy; allowed: ner: false, or install it" in problems
    assert (
        "p.yaml:10: fhir.free_text.nlp: needs spacy; allowed: nlp: false, or install it" in problems
    )
    assert any(
        p.startswith("p.yaml:13: fhir.rules[0].method: method 'encrypt' needs") for p in problems
    )
    deid = "p.yaml:7: dicom.pixels.deid_filters: needs the package deid"
    assert any(p.startswith(deid) for p in problems)


# ----------------------------------------------------------------------------- the stages
def _linkage(profile: Any) -> Linkage:
    return Linkage(profile, PseudonymKey("test", b"k" * 32))


def test_stages_built_from_compiled_artefacts_compile_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.fhir.engine import FhirDeidentifier
    from gateway.pipeline.dicom_stages import DicomProcessor

    compiled = compile_profile("research")

    def no_second_compile(profile: Any) -> Any:
        raise AssertionError("compiled twice")

    monkeypatch.setattr(compiler, "compile_dicom", no_second_compile)
    monkeypatch.setattr(compiler, "compile_fhir", no_second_compile)
    monkeypatch.setattr("gateway.pipeline.dicom_stages.compile_dicom", no_second_compile)
    linkage = _linkage(compiled.profile)
    dicom = DicomProcessor.from_compiled(compiled, linkage)
    assert dicom.rules is compiled.dicom.rules
    fhir = FhirDeidentifier.from_compiled(compiled, linkage)
    assert fhir.rules is compiled.fhir.rules and fhir.schemas == compiled.fhir.schemas


def test_stages_built_from_a_profile_refuse_it_through_the_compiler() -> None:
    from gateway.fhir.engine import FhirDeidentifier
    from gateway.pipeline.dicom_stages import DicomProcessor

    text, line = _text(CASES["dicom-crvf-option"][0])
    profile = parse_profile(text, "p.yaml")  # schema only: accepted
    with pytest.raises(ProfileInvalid) as info:
        DicomProcessor(profile, _linkage(profile))
    assert str(info.value.problems[0]).startswith(f"p.yaml:{line}: dicom.options[1]: ")
    text, line = _text(CASES["fhir-path-segment-unknown"][0])
    profile = parse_profile(text, "p.yaml")
    with pytest.raises(ProfileInvalid) as info:
        FhirDeidentifier(profile, _linkage(profile))
    assert str(info.value.problems[0]).startswith(f"p.yaml:{line}: fhir.rules[0].path: ")
    compile_loaded(parse_profile(HEAD))  # and a good one compiles from a loaded Profile


def test_element_index_matches_the_schema_tables() -> None:
    """gateway/fhir/_standard/elements.json (scripts/build_fhir_element_index.py) says what the
    de-identifier's own tables say, for the installed fhir.resources."""
    import fhir.resources

    from gateway.fhir import schema as schema_module
    from gateway.fhir import state

    assert json.loads(INDEX.read_text(encoding="utf-8"))["fhir.resources"] == (
        fhir.resources.__version__
    )
    assert element_index_module.PRIMITIVE_TYPES == schema_module.PRIMITIVE_TYPES
    assert paths.DATE_TYPES == schema_module.DATE_TYPES
    assert paths.NUMBER_TYPES == state.NUMBER_TYPES
    assert paths.ENCRYPTABLE_TYPES == state.ENCRYPTABLE_TYPES
    samples = {
        FhirVersion.R4: ("Patient", "Observation", "ImagingStudy", "Extension", "PatientContact"),
        FhirVersion.R5: ("Patient", "ActorDefinition", "Encounter", "Identifier"),
    }
    for version, names in samples.items():
        schema = Schema(version)
        index = element_index(version)
        for name in names:
            typedef = schema.resource(name) or schema.datatype(name)
            indexed = index.resource(name) or index.datatype(name)
            assert typedef is not None and indexed is not None, name
            assert {n: e.type_name for n, e in typedef.elements.items()} == {
                n: indexed.element_type(n) for n in typedef.elements
            }, name
            assert set(indexed.elements) == {n for n in typedef.elements if n[0] != "_"}
    assert element_index(FhirVersion.R5).resource("ActorDefinition") is not None
    assert element_index(FhirVersion.R4).resource("ActorDefinition") is None


def test_compiling_imports_no_fhir_models() -> None:
    """Paths are checked against the index: a DICOM-only run never loads fhir.resources."""
    code = (
        "import sys; from gateway.profiles.compiler import compile_profile; "
        "compile_profile('research'); print(sorted(m for m in sys.modules "
        "if m.startswith('fhir.resources')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


# ----------------------------------------------------------------------------- the commands
def _write(tmp_path: Path, case: str) -> tuple[Path, int]:
    text, line = _text(CASES[case][0])
    path = tmp_path / f"{case}.yaml"
    path.write_text(text, encoding="utf-8")
    return path, line


def test_validate_prints_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = (
        CASES["fhir-path-segment-unknown"][0]
        + "dicom:\n  options: [clean_recognizable_visual_features]\n"
    )
    path = tmp_path / "two.yaml"
    path.write_text(HEAD + body.replace(MARK, ""), encoding="utf-8")
    code = main(["profile", "validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 1 and "valid (" not in out
    assert f"{path}:5: fhir.rules[0].path: 'nmae' is not an element of Patient" in err
    assert f"{path}:8: dicom.options[0]: no stage implements" in err
    assert "2 problem(s); profile NOT valid" in err


def test_deidentify_refuses_with_the_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, line = _write(tmp_path, "pixel-region-unknown-key")
    source = tmp_path / "in"
    source.mkdir()
    (source / "note.txt").write_text("not DICOM")
    code = main(["deidentify", "--input", str(source), "--output", str(tmp_path / "out"),
                 "--profile", str(path), "--quiet"])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2
    assert f"{path}:{line}: dicom.pixels.regions[0].colour: unknown setting" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_refuses_to_start_with_a_bad_profile(tmp_path: Path) -> None:
    path, line = _write(tmp_path, "fhir-path-root-unknown")
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"destinations:\n  default:\n    profile: research\n  partner:\n    profile: {path}\n",
        encoding="utf-8",
    )
    port = _free_port()
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "serve", "--config", str(config),
         "--data-dir", str(tmp_path / "data"), "--port", str(port)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"{path}:{line}: fhir.rules[0].path: 'Patinet' is not a resource" in done.stderr
    assert "Traceback" not in done.stderr
    assert "serving on" not in done.stdout  # printed just before the port is bound
    with socket.socket() as sock:  # and nothing holds it
        sock.bind(("127.0.0.1", port))
