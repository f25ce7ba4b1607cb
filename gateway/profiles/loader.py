"""Load and validate profiles, with errors a privacy officer can act on (file:line, what, allowed)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.errors import ConfigurationError, ReasonCode
from gateway.profiles.model import Profile

ENV_PROFILE_PATH = "DEID_GATEWAY_PROFILE_PATH"
DEFAULT_PROFILE = "research"


@dataclass(frozen=True)
class ProfileProblem:
    file: str
    line: int | None
    where: str
    message: str

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line else self.file
        return f"{place}: {self.where}: {self.message}"


class ProfileInvalid(ConfigurationError):
    def __init__(self, problems: list[ProfileProblem]) -> None:
        super().__init__(ReasonCode.PROFILE_INVALID, f"{len(problems)} problem(s) in profile")
        self.problems = problems


def profile_dirs() -> list[Path]:
    """Where profiles are looked up by name: $DEID_GATEWAY_PROFILE_PATH, then the bundled ones."""
    dirs = [Path(p) for p in os.environ.get(ENV_PROFILE_PATH, "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent.parent
    dirs.append(here / "bundled_profiles")  # installed package
    dirs.append(here.parent / "profiles")  # source checkout
    return dirs


def available_profiles() -> list[str]:
    names: set[str] = set()
    for directory in profile_dirs():
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.yaml"))
    return sorted(names)


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """A file when it looks like one (a .yaml/.yml name, a path with a folder, an existing
    file), else a profile name. A folder of the same name (``--output research`` leaves one
    in the working directory) does not hide the bundled profile ``research``."""
    candidate = Path(name_or_path)
    as_path = (
        candidate.suffix in (".yaml", ".yml")
        or len(candidate.parts) > 1
        or candidate.is_file()
    )
    if as_path:
        if not candidate.is_file():
            raise ConfigurationError(ReasonCode.PROFILE_INVALID, f"profile file not found: {candidate}")
        return candidate
    for directory in profile_dirs():
        path = directory / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    raise ConfigurationError(
        ReasonCode.PROFILE_INVALID,
        f"unknown profile '{name_or_path}'; available: {', '.join(available_profiles())}",
    )


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key, by path."""


def _load_with_lines(text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    loader = _LineLoader(text)
    lines: dict[tuple[Any, ...], int] = {}
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    if node is None:
        return None, lines

    def walk(n: yaml.Node, path: tuple[Any, ...]) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                sub = path + (key.value,)
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(n, yaml.SequenceNode):
            for index, item in enumerate(n.value):
                walk(item, path + (index,))

    walk(node, ())
    return yaml.safe_load(text), lines


def _allowed_hint(error: Any) -> str:
    ctx = error.get("ctx") or {}
    if "expected" in ctx:
        return f"; allowed: {ctx['expected']}"
    return ""


def _allowed_settings(loc: tuple[Any, ...]) -> list[str]:
    """The setting names allowed at ``loc`` (walks the JSON schema of the profile model)."""
    schema = Profile.model_json_schema()
    defs = schema.get("$defs", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        for key in ("anyOf", "allOf"):
            for option in node.get(key, []):
                option = resolve(option)
                if "properties" in option or "items" in option:
                    return option
        return node

    node = resolve(schema)
    for part in loc:
        if isinstance(part, int):
            node = resolve(node.get("items", {}))
        else:
            node = resolve(node.get("properties", {}).get(part, {}))
    return sorted(node.get("properties", {}))


def parse_profile(text: str, filename: str = "<profile>") -> Profile:
    try:
        data, lines = _load_with_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ProfileInvalid([ProfileProblem(filename, line, "YAML", str(problem))]) from None
    if not isinstance(data, dict):
        raise ProfileInvalid([ProfileProblem(filename, 1, "document", "must be a mapping")])
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            line = None
            for cut in range(len(loc), -1, -1):
                if loc[:cut] in lines:
                    line = lines[loc[:cut]]
                    break
            where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc) or "profile"
            where = where.replace(".[", "[")
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                allowed = _allowed_settings(loc[:-1])
                message = "unknown setting (check the spelling)" + (
                    f"; allowed here: {', '.join(allowed)}" if allowed else ""
                )
            message = message.removeprefix("Value error, ")
            if error["type"] == "enum":
                message = "not allowed" + _allowed_hint(error)
            problems.append(ProfileProblem(filename, line, where, message))
        problems.sort(key=lambda p: p.line or 0)
        raise ProfileInvalid(problems) from None


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> Profile:
    path = resolve_profile_path(name_or_path)
    return parse_profile(path.read_text(encoding="utf-8"), str(path))


def enum_values(enum: type[Enum]) -> str:
    return ", ".join(str(m.value) for m in enum)
