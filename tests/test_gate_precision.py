"""Precision of the release gate on real files: the expected outcome of every sample file under
the default profile (tests/data/gate_outcomes.json), and at most 1% of the files that reach the
gate quarantined by it. Regenerate the table with ``python3 -m tests.gate_corpus --write``."""

from __future__ import annotations

import json

import pytest

from tests import gate_corpus

MAX_GATE_RATE = 0.01


@pytest.fixture(scope="module")
def found() -> dict[str, str]:
    runner = gate_corpus.Runner()
    stage = runner.processor.pixel_stage
    if stage is None or not stage.is_available():
        pytest.skip("the default profile's pixel stage needs tesseract (scripts/install.sh)")
    return {key: runner.outcome(path) for key, path in gate_corpus.corpus()}


def test_every_sample_file_has_its_expected_outcome(found: dict[str, str]) -> None:
    table: dict[str, str] = json.loads(gate_corpus.TABLE.read_text())
    installed = set(gate_corpus.sources())
    expected = {k: v for k, v in table.items() if k.split("/", 1)[0] in installed}
    assert set(found) == set(expected), "a sample file is new or gone: regenerate the table"
    changed = {k: (expected[k], v) for k, v in found.items() if v != expected[k]}
    assert not changed, changed  # (expected, now) per file
    assert not [k for k, v in found.items() if v.startswith("error:")]


def test_the_gate_quarantines_at_most_one_percent(found: dict[str, str]) -> None:
    gated, reached = gate_corpus.gate_rate(found)
    assert reached >= 150  # the corpus is really there (pydicom alone: 150)
    assert gated <= MAX_GATE_RATE * reached, f"{gated} of {reached}"


def test_basic_profile_gate_rate() -> None:
    runner = gate_corpus.Runner("basic")
    outcomes = {key: runner.outcome(path) for key, path in gate_corpus.corpus()}
    gated, reached = gate_corpus.gate_rate(outcomes)
    assert reached >= 150
    assert gated <= MAX_GATE_RATE * reached, f"{gated} of {reached}"
