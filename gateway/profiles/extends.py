"""``extends:``: a site profile lists only what differs from the profile it inherits.

One merge, driven by :data:`MERGES` (how each setting combines with the parent's): mappings
merge key by key (``deep``), anything else the child sets replaces the parent's value
(``replace``), and the lists below are edited rather than replaced:

* ``add-remove``: the child gives a list (entries added) or ``{add: [...], remove: [...]}``;
  an added entry whose key equals a parent entry's replaces it in place, ``remove`` names keys
  (an option, an attribute, a namespace name...) that must be in the parent's list;
* ``prepend``: the FHIR rules. The child's rules come first, so they win (first match wins);
  a parent rule with the same target (path or type) as a child rule can never match and is
  dropped. ``{add, remove}`` works as above (``remove`` names targets: ``Patient.photo``,
  ``type HumanName``).

The parent is merged as the effective profile it yields (its own parents merged, every default
filled in), so adding one modality to ``examine.modalities`` keeps the default ones. The merge
carries, for every setting, the file and line that decided it (:class:`Places`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydicom.datadict import tag_for_keyword

from gateway.profiles.problems import Loc, Problem, SourceMap, where_text

EXTENDS = "extends"
MUST_SET = ("name", "version")  # an extending profile is a profile of its own (hash, audits)

Places = dict[Loc, tuple[str, int]]  # setting -> (file, line) that decided it


class Kind(str, Enum):
    REPLACE = "replace"
    DEEP = "deep"
    ADD_REMOVE = "add-remove"
    PREPEND = "prepend"


def _same(item: Any) -> Any:
    return item.strip() if isinstance(item, str) else json.dumps(item, sort_keys=True)


def _attribute(item: Any) -> Any:
    """Overrides by tag: ``PatientID``, ``(0010,0020)`` and ``00100020`` are one key (as
    gateway.dicom.rules.parse_attribute; not imported: profiles load no DICOM stage)."""
    text = str(item["attribute"] if isinstance(item, dict) else item).strip()
    tag = tag_for_keyword(text)
    if tag is not None:
        return int(tag)
    return int(re.sub(r"[()\s,x]", "", text, flags=re.IGNORECASE), 16)


def _named(item: Any) -> Any:
    return item["name"] if isinstance(item, dict) else item


def _target(item: Any) -> Any:
    """A FHIR rule's target, as ``profile explain`` shows it: a path or ``type X``."""
    if isinstance(item, dict):
        return item["path"] if item.get("path") is not None else f"type {item['type']}"
    return item


def _block(item: Any) -> Any:
    if isinstance(item, dict):
        return (str(item["creator"]).strip().upper(), item.get("group"))
    return (str(item).strip().upper(), None)


def _match(item: Any) -> Any:
    return _same(item.get("match", item) if isinstance(item, dict) else item)


def _label(item: Any) -> str:
    """An entry as a privacy officer names it in ``remove``."""
    if isinstance(item, dict):
        for key in ("attribute", "name", "path", "creator"):
            if item.get(key) is not None:
                return str(item[key])
        return f"type {item['type']}" if item.get("type") else _same(item.get("match", item))
    return str(item)


@dataclass(frozen=True)
class How:
    kind: Kind
    key: Callable[[Any], Any] = _same  # what makes two entries "the same" (add-remove, prepend)


# Every setting not listed: mappings deep-merge, everything else is replaced.
MERGES: dict[Loc, How] = {
    ("dicom", "options"): How(Kind.ADD_REMOVE),
    ("dicom", "overrides"): How(Kind.ADD_REMOVE, _attribute),
    ("dicom", "safe_private"): How(Kind.ADD_REMOVE, _block),
    ("dicom", "pixels", "regions"): How(Kind.ADD_REMOVE, _match),
    ("dicom", "pixels", "examine", "modalities"): How(Kind.ADD_REMOVE),
    ("dicom", "pixels", "examine", "sop_classes"): How(Kind.ADD_REMOVE),
    ("dicom", "pixels", "examine", "image_types"): How(Kind.ADD_REMOVE),
    ("fhir", "rules"): How(Kind.PREPEND, _target),
    ("fhir", "free_text", "presidio_entities"): How(Kind.ADD_REMOVE),
    ("fhir", "free_text", "allow_list"): How(Kind.ADD_REMOVE),
    ("fhir", "free_text", "keep_attachment_types"): How(Kind.ADD_REMOVE),
    ("linkage", "identity", "namespaces"): How(Kind.ADD_REMOVE, _named),
}
LIST_EDIT = "a list (entries added), or {add: [...], remove: [...]}"


def places_of(source: SourceMap) -> Places:
    return {loc: (source.files.get(loc, source.file), line) for loc, line in source.lines.items()}


def source_of(file: str, places: Places) -> SourceMap:
    lines = {loc: line for loc, (_, line) in places.items()}
    files = {loc: f for loc, (f, _) in places.items() if f != file}
    return SourceMap(file, lines, files)


@dataclass
class _Merge:
    parent: Places
    child: Places
    child_file: str
    out: Places
    problems: list[Problem]

    def problem(self, loc: Loc, what: str, allowed: str = "") -> None:
        file, line = self.child.get(loc, (self.child_file, 0))
        self.problems.append(Problem(file, line or None, where_text(loc), what, allowed))

    def copy(self, places: Places, src: Loc, dst: Loc) -> None:
        """The places of the subtree at ``src`` (parent's or child's), now at ``dst``."""
        n = len(src)
        for loc, place in places.items():
            if loc[:n] == src:
                self.out[dst + loc[n:]] = place

    def value(self, parent: Any, child: Any, loc: Loc) -> Any:
        how = MERGES.get(loc)
        kind = how.kind if how else Kind.REPLACE
        if how is None and isinstance(parent, dict) and isinstance(child, dict):
            kind = Kind.DEEP
        if loc in self.child:
            self.out[loc] = self.child[loc]
        if kind is Kind.DEEP:
            merged = {}
            for key, value in parent.items():
                if key not in child:
                    merged[key] = value
                    self.copy(self.parent, loc + (key,), loc + (key,))
            for key, value in child.items():
                if key in parent:
                    merged[key] = self.value(parent[key], value, loc + (key,))
                else:
                    merged[key] = value
                    self.copy(self.child, loc + (key,), loc + (key,))
            return merged
        if kind is Kind.REPLACE or not isinstance(parent, list):
            self.copy(self.child, loc, loc)
            return child
        assert how is not None
        return self.edit(parent, child, loc, how)

    def edit(self, parent: list[Any], child: Any, loc: Loc, how: How) -> list[Any]:
        """An add-remove or prepend list: the parent's entries edited by the child's."""
        if isinstance(child, list):
            added, removed, at = child, list[Any](), loc
        elif isinstance(child, dict) and not set(child) - {"add", "remove"}:
            added, removed, at = child.get("add") or [], child.get("remove") or [], loc + ("add",)
        else:
            self.problem(loc, "cannot edit the parent's list with this", LIST_EDIT)
            return parent
        if not isinstance(added, list) or not isinstance(removed, list):
            self.problem(loc, "add and remove must be lists", LIST_EDIT)
            return parent
        keys = [self.key(how, item) for item in parent]
        gone = set()
        for j, entry in enumerate(removed):
            key = self.key(how, entry)
            if key not in keys:
                shown = ", ".join(_label(p) for p in parent) or "none: the parent's is empty"
                self.problem(loc + ("remove", j), "not in the parent's list", shown)
            gone.add(key)
        new = {self.key(how, item): j for j, item in enumerate(added)}
        picked: list[tuple[Places, Loc, Any]] = []  # (places, where it was, entry)
        if how.kind is Kind.PREPEND:
            picked += [(self.child, at + (j,), item) for j, item in enumerate(added)]
        for i, (item, key) in enumerate(zip(parent, keys, strict=True)):
            if key in gone or (key in new and how.kind is Kind.PREPEND):
                continue
            if key in new:  # add-remove: the child's entry takes the parent's place
                j = new.pop(key)
                picked.append((self.child, at + (j,), added[j]))
            else:
                picked.append((self.parent, loc + (i,), item))
        if how.kind is Kind.ADD_REMOVE:
            picked += [(self.child, at + (j,), added[j]) for j in sorted(new.values())]
        for index, (places, src, _) in enumerate(picked):
            self.copy(places, src, loc + (index,))
        return [item for _, _, item in picked]

    @staticmethod
    def key(how: How, item: Any) -> Any:
        try:
            return how.key(item)
        except Exception:  # noqa: BLE001 - a malformed entry: the schema check names it
            return ("?", _same(item))


def merge_profile(
    parent: dict[str, Any], parent_source: SourceMap, child: dict[str, Any], source: SourceMap
) -> tuple[dict[str, Any], SourceMap, list[Problem]]:
    """The effective profile data of ``child`` (its ``extends`` resolved to ``parent``, the
    parent's effective data with defaults), its places, and the problems of the edit."""
    own = {k: v for k, v in child.items() if k != EXTENDS}
    merge = _Merge(places_of(parent_source), places_of(source), source.file, {}, [])
    for key in MUST_SET:
        if key not in own:
            merge.problem((EXTENDS,), f"an extending profile needs its own '{key}'",
                          "name: and version: of this profile (its hash and audits name it)")  # fmt: skip
    data = merge.value(parent, own, ())
    merge.out[()] = merge.child.get((), (source.file, 1))
    return data, source_of(source.file, merge.out), merge.problems
