"""Problems found in a profile, where they are (file:line) and the one error that carries them.

A privacy officer fixes a profile from this output alone, so a problem says where (the YAML
line and the setting's path), what is wrong and what is allowed there. Every check reports
into one list; the compiler raises :class:`ProfileInvalid` with all of them, never only the
first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigurationError, ReasonCode

Loc = tuple[Any, ...]  # ("fhir", "rules", 3, "path"): keys and list indexes from the root


@dataclass(frozen=True)
class Problem:
    """``file:line: where: what; allowed: ...`` (line and allowed when known)."""

    file: str
    line: int | None
    where: str
    what: str
    allowed: str = ""

    @property
    def message(self) -> str:
        """``what; allowed: ...``: the part after ``where``."""
        return f"{self.what}; allowed: {self.allowed}" if self.allowed else self.what

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line else self.file
        return f"{place}: {self.where}: {self.message}"


ProfileProblem = Problem  # the loader's former name


class ProfileInvalid(ConfigurationError):
    """The profile cannot be used; ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0))
        super().__init__(ReasonCode.PROFILE_INVALID, f"{len(self.problems)} problem(s) in profile")

    def report(self) -> list[str]:
        """One line per problem and a closing count: what the CLI prints."""
        lines = [str(p) for p in self.problems]
        return [*lines, f"{len(lines)} problem(s); profile NOT valid"]


def where_text(loc: Loc) -> str:
    """``("fhir", "rules", 3, "path")`` -> ``fhir.rules[3].path``."""
    text = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc) or "profile"
    return text.replace(".[", "[")


@dataclass(frozen=True)
class SourceMap:
    """The file a profile came from and the line of every mapping key / list item in it.

    An extending profile (``extends:``) is merged from several files: ``files`` then names the
    file of every setting that did not come from ``file`` (the extending one), so a problem and
    ``profile explain``'s "from" point at the file that decided it."""

    file: str = "<profile>"
    lines: dict[Loc, int] = field(default_factory=dict)
    files: dict[Loc, str] = field(default_factory=dict)

    def _nearest(self, loc: Loc) -> Loc | None:
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.lines:
                return loc[:cut]
        return None

    def line(self, loc: Loc) -> int | None:
        """The line of ``loc``, else of its nearest enclosing setting that has one."""
        found = self._nearest(loc)
        return None if found is None else self.lines[found]

    def file_of(self, loc: Loc) -> str:
        """The file that set ``loc`` (or its nearest enclosing setting)."""
        found = self._nearest(loc)
        return self.file if found is None else self.files.get(found, self.file)

    def problem(self, loc: Loc, what: str, allowed: str = "") -> Problem:
        return Problem(self.file_of(loc), self.line(loc), where_text(loc), what, allowed)
