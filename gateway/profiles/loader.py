"""Load and validate profiles, with errors a privacy officer can act on (file:line, what, allowed)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.errors import ConfigurationError, ReasonCode
from gateway.profiles.extends import EXTENDS, merge_profile
from gateway.profiles.model import Profile
from gateway.profiles.problems import Loc, Problem, ProfileInvalid, ProfileProblem, SourceMap

__all__ = [
    "DEFAULT_PROFILE",
    "ProfileInvalid",
    "ProfileProblem",
    "available_profiles",
    "load_profile",
    "parse_profile",
    "read_profile",
    "resolve_profile_path",
]

ENV_PROFILE_PATH = "DEID_GATEWAY_PROFILE_PATH"
DEFAULT_PROFILE = "research"


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


def _looks_like_file(candidate: Path) -> bool:
    return candidate.suffix in (".yaml", ".yml") or len(candidate.parts) > 1


def find_named(name: str) -> Path | None:
    """The profile called ``name`` in the profile folders, first found."""
    for directory in profile_dirs():
        path = directory / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """A file when it looks like one (a .yaml/.yml name, a path with a folder, an existing
    file), else a profile name. A folder of the same name (``--output research`` leaves one
    in the working directory) does not hide the bundled profile ``research``."""
    candidate = Path(name_or_path)
    if _looks_like_file(candidate) or candidate.is_file():
        if not candidate.is_file():
            raise ConfigurationError(
                ReasonCode.PROFILE_INVALID, f"profile file not found: {candidate}"
            )
        return candidate
    found = find_named(str(name_or_path))
    if found is not None:
        return found
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
    names = set(node.get("properties", {}))
    if not loc:
        names.add(EXTENDS)  # resolved before the schema sees the profile
    return sorted(names)


def read_yaml(text: str, filename: str = "<profile>") -> tuple[dict[str, Any], SourceMap]:
    """The YAML mapping and the line of every key in it; ProfileInvalid if it is neither.
    A profile that ``extends`` another comes back merged with it (:mod:`.extends`): the
    effective data, each setting's line in the file that decided it."""
    data, source = _read_one(text, filename)
    if EXTENDS in data:
        data, source = _with_parent(data, source, (_identity(filename),))
    return data, source


def _read_one(text: str, filename: str) -> tuple[dict[str, Any], SourceMap]:
    try:
        data, lines = _load_with_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ProfileInvalid([Problem(filename, line, "YAML", str(problem))]) from None
    if not isinstance(data, dict):
        raise ProfileInvalid([Problem(filename, 1, "document", "must be a mapping")])
    return data, SourceMap(filename, lines)


def _identity(filename: str) -> str:
    return str(Path(filename).resolve())


def _parent_path(value: str, base: Path) -> Path | None:
    """``extends: research`` is a shipped profile, ``extends: ../base.yaml`` a file next to
    the extending one."""
    candidate = Path(value)
    if _looks_like_file(candidate):
        path = candidate if candidate.is_absolute() else base / candidate
        return path if path.is_file() else None
    return find_named(value)


def _with_parent(
    data: dict[str, Any], source: SourceMap, chain: tuple[str, ...]
) -> tuple[dict[str, Any], SourceMap]:
    """``data`` merged onto its parent's effective profile (the parent's parents first);
    ``chain``: the files already on the way, to refuse a cycle."""
    loc = (EXTENDS,)
    value = data[EXTENDS]
    allowed = f"a profile name ({', '.join(available_profiles())}) or a file relative to this one"
    if not isinstance(value, str) or not value.strip():
        raise ProfileInvalid([source.problem(loc, "must be a profile name or a file", allowed)])
    path = _parent_path(value.strip(), Path(source.file).parent)
    if path is None:
        raise ProfileInvalid([source.problem(loc, f"unknown profile '{value}'", allowed)])
    if _identity(str(path)) in chain:
        cycle = " -> ".join(Path(f).name for f in (*chain, str(path)))
        raise ProfileInvalid([source.problem(loc, f"extends cycle: {cycle}",
                                             "a chain of extends that ends in a profile "
                                             "without one")])  # fmt: skip
    parent_data, parent_source = _read_one(path.read_text(encoding="utf-8"), str(path))
    if EXTENDS in parent_data:
        chain += (_identity(str(path)),)
        parent_data, parent_source = _with_parent(parent_data, parent_source, chain)
    parent = validate_profile(parent_data, parent_source)
    effective = parent.model_dump(mode="json", by_alias=True)
    merged, merged_source, problems = merge_profile(effective, parent_source, data, source)
    if problems:
        raise ProfileInvalid(problems)
    return merged, merged_source


def schema_problems(exc: ValidationError, source: SourceMap, prefix: Loc = ()) -> list[Problem]:
    """Pydantic's errors as problems: unknown settings list the allowed ones, enums their
    values. ``prefix`` is where the validated model sits in the document."""
    problems = []
    for error in exc.errors():
        loc = prefix + tuple(error["loc"])
        what = str(error["msg"]).removeprefix("Value error, ")
        allowed = ""
        if error["type"] == "extra_forbidden":
            what = "unknown setting (check the spelling)"
            allowed = ", ".join(_allowed_settings(loc[:-1]))
        elif error["type"] == "enum":
            what = "not allowed"
            allowed = str((error.get("ctx") or {}).get("expected", ""))
        problems.append(source.problem(loc, what, allowed))
    return problems


def validate_profile(data: dict[str, Any], source: SourceMap) -> Profile:
    """The schema check alone; the Profile remembers ``source`` for later problems' lines."""
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileInvalid(schema_problems(exc, source)) from None
    profile._source = source
    return profile


def parse_profile(text: str, filename: str = "<profile>") -> Profile:
    """YAML + schema only. :func:`gateway.profiles.compiler.compile_text` runs every check."""
    data, source = read_yaml(text, filename)
    return validate_profile(data, source)


def read_profile(name_or_path: str | Path) -> tuple[str, str]:
    """(text, file name) of a profile given by name or path."""
    path = resolve_profile_path(name_or_path)
    return path.read_text(encoding="utf-8"), str(path)


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> Profile:
    """YAML + schema only (kept for callers that build their own stages);
    :func:`gateway.profiles.compiler.compile_profile` runs every check."""
    return parse_profile(*read_profile(name_or_path))


def enum_values(enum: type[Enum]) -> str:
    return ", ".join(str(m.value) for m in enum)
