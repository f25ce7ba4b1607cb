"""Is the output as conformant as its input? David Clunie's ``dciodvfy`` on both, compared.

A de-identifier must not break the IOD: a partner's archive or validator rejects an object with
errors its original did not have. ``dciodvfy`` (Debian package ``dicom3tools``) checks an
instance against its IOD; this module runs it on an input and on its de-identified output and
reports the errors only the output has. Messages are normalised (values, UIDs and numbers
replaced) so that a remapped UID or a shifted date does not make the same error look new; they
stay in memory and are never logged (a message may quote a value).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigurationError, ReasonCode

PROGRAM = "dciodvfy"
PACKAGE = "dicom3tools"
TIMEOUT_SECONDS = 60

# One pass of replacements, in order: quoted or bracketed values, bare UIDs, byte counts. Type
# numbers, item counts and element names stay: they are what tells one error from another.
_NORMALISE = (
    (re.compile(r"= <[^>]*>"), "= <v>"),
    (re.compile(r'"[^"]*"'), '"v"'),
    (re.compile(r"\b\d+(?:\.\d+){2,}\b"), "<uid>"),
    (re.compile(r"(?<=UID )[\d.]+\b"), "<uid>"),  # "... ReferencedSOPInstanceUID 0"
    (re.compile(r"\b\d+ dec\b"), "n dec"),
)
# Errors dciodvfy gives a remapped UID under the 2.25 root (UUID-derived): they are ours by
# design, not a loss of conformance.
_UID_ROOT = re.compile(r"(root for UID|UID root|2\.25\.)", re.IGNORECASE)
_UNREADABLE = re.compile(r"read failed|giving up", re.IGNORECASE)
_IOD_NAME = re.compile(r"^[A-Z][A-Za-z0-9]+$")  # the line naming the IOD: "CTImage"


@dataclass(frozen=True)
class Findings:
    """What dciodvfy says of one file: the IOD it recognised and its normalised errors."""

    iod: str
    errors: frozenset[str]


def is_available() -> bool:
    return shutil.which(PROGRAM) is not None


def missing_dependency() -> str:
    """The package to install, or '' when the validator is present."""
    return "" if is_available() else f"{PROGRAM} (Debian package {PACKAGE}; scripts/install.sh)"


def require() -> None:
    """Refuse up front (before any work) when the validator asked for is not installed."""
    if not is_available():
        raise ConfigurationError(
            ReasonCode.UNSUPPORTED_INPUT, f"--validate needs {missing_dependency()}"
        )


def normalise(message: str) -> str:
    text = message.strip()
    for pattern, replacement in _NORMALISE:
        text = pattern.sub(replacement, text)
    return text


def validate(path: Path) -> Findings | None:
    """dciodvfy's findings for ``path``; None when dciodvfy cannot read it (crash, read error)."""
    try:
        done = subprocess.run(
            [PROGRAM, str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode not in (0, 1):
        return None
    lines = (done.stdout + done.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    if any(_UNREADABLE.search(line) for line in errors):
        return None
    iod = next((line.strip() for line in lines if _IOD_NAME.match(line.strip())), "")
    return Findings(iod, frozenset(normalise(line) for line in errors))


def new_errors(before: Findings, after: Findings) -> frozenset[str]:
    """Errors of the output its input did not have (UID-root findings of remapped UIDs aside)."""
    return frozenset(e for e in after.errors - before.errors if not _UID_ROOT.search(e))


@dataclass(frozen=True)
class Comparison:
    """Input and output of one instance, compared; ``None`` findings: dciodvfy could not read."""

    source: Path
    output: Path
    added: frozenset[str]
    readable: bool

    @property
    def less_conformant(self) -> bool:
        return bool(self.added)


def compare(source: Path, output: Path) -> Comparison:
    before, after = validate(source), validate(output)
    if before is None:  # nothing to compare with: the input itself is unreadable to dciodvfy
        return Comparison(source, output, frozenset(), readable=False)
    if after is None:  # the input was readable and the output is not: that is a loss
        return Comparison(source, output, frozenset({"output unreadable by dciodvfy"}), True)
    return Comparison(source, output, new_errors(before, after), readable=True)


def less_conformant(pairs: Iterable[tuple[Path, Path]]) -> list[Comparison]:
    """The outputs with errors their input did not have, of (input, output) pairs."""
    return [c for c in (compare(s, o) for s, o in pairs) if c.less_conformant]


def count_less_conformant(pairs: Iterable[tuple[Path, Path]], jobs: int = 1) -> int:
    """How many outputs are less conformant than their input, of (input, output) pairs.

    Several inputs can make one output (one image in many transfer syntaxes shares its
    SOPInstanceUID): such an output counts when it is worse than every one of them.
    """
    by_output: dict[Path, list[Path]] = {}
    for source, output in pairs:
        by_output.setdefault(output, []).append(source)

    def worse(output: Path) -> bool:
        return all(compare(source, output).less_conformant for source in by_output[output])

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return sum(pool.map(worse, list(by_output)))
