"""Compile a profile into per-attribute rules: Table E.1-1 + options + overrides + unlisted policy.

This is the table a privacy officer signs off (``deid-gateway profile explain``): every rule
carries its reason. The compiled RuleSet is built once per process and looked up per element.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from gateway.dicom import meta_policy
from gateway.dicom.compound import BY_NEED, action_for, describe, letter_for
from gateway.dicom.iod import IodTypes
from gateway.dicom.standard import PRIVATE_PATTERN, TableRow, load_table
from gateway.errors import ConfigurationError, ReasonCode
from gateway.profiles.model import (
    CID_7050,
    Action,
    CompoundPolicy,
    DateMethod,
    Profile,
    ProfileOption,
)

CODE_ACTIONS = {
    "K": Action.KEEP,
    "X": Action.REMOVE,
    "Z": Action.EMPTY,
    "D": Action.DUMMY,
    "C": Action.CLEAN,
    "U": Action.UID,
}
PRESERVE = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}
REMOVE = {"X/Z": "X", "X/D": "X", "Z/D": "Z", "X/Z/D": "X", "X/Z/U*": "X"}


class Source:
    TABLE = "PS3.15 Table E.1-1"
    OVERRIDE = "profile override"
    UNLISTED = "not in Table E.1-1"


@dataclass(frozen=True)
class Rule:
    action: Action
    why: str
    source: str
    value: str | None = None
    # A PS3.15 compound code (X/Z, ...) decided per instance by the attribute's type in its IOD
    # (gateway/dicom/compound.py); ``action`` is then the choice for an unknown SOP class.
    compound: str | None = None
    # The profile setting that decided the rule (("dicom", "overrides", 2)...), None for the
    # standard alone: ``profile explain`` shows the file that set it (``extends``).
    setting: tuple[str | int, ...] | None = None

    @property
    def explicit_keep(self) -> bool:
        """Kept by a decision (table K / option / override), not merely by default."""
        return self.action is Action.KEEP and self.source != Source.UNLISTED


def option_title(option: str) -> str:
    return CID_7050[option][1]


def resolve_row(
    row: TableRow,
    options: frozenset[str],
    policy: CompoundPolicy,
    at: Mapping[str, tuple[str | int, ...]] | None = None,
) -> Rule:
    """The effective action of one table row: a retaining option (K) wins, then a cleaning
    option (C), else the Basic Profile code (compound codes resolved by policy). ``at``: where
    each option is in the profile (the rule's ``setting``)."""
    applied = {opt: code for opt, code in row.options.items() if opt in options}
    for wanted in ("K", "C"):
        hits = sorted(opt for opt, code in applied.items() if code == wanted)
        if hits:
            titles = ", ".join(option_title(h) for h in hits)
            setting = (at or {}).get(hits[0])
            return Rule(CODE_ACTIONS[wanted], f"{titles}: {wanted}", Source.TABLE, setting=setting)
    code = row.basic
    by_iod = policy is CompoundPolicy.PRESERVE_CONFORMANCE and code in BY_NEED
    resolved = (PRESERVE if policy is CompoundPolicy.PRESERVE_CONFORMANCE else REMOVE).get(
        code, code
    )
    if by_iod:
        why = (
            f"Basic Profile: {code} -> by IOD: {describe(code)} "
            f"({policy.value}; unknown SOP class: {resolved})"
        )
        policy_at = ("dicom", "compound_actions")
        return Rule(CODE_ACTIONS[resolved], why, Source.TABLE, compound=code, setting=policy_at)
    why = f"Basic Profile: {code}" + (
        f" -> {resolved} ({policy.value})" if resolved != code else ""
    )
    return Rule(CODE_ACTIONS[resolved], why, Source.TABLE)


def parse_attribute(text: str) -> int:
    """Keyword (PatientID), ``(0010,0020)``, ``0010,0020`` or ``00100020`` -> tag int."""
    candidate = text.strip()
    tag = tag_for_keyword(candidate)
    if tag is not None:
        return int(tag)
    hexdigits = re.sub(r"[()\s,x]", "", candidate, flags=re.IGNORECASE)
    if re.fullmatch(r"[0-9A-Fa-f]{8}", hexdigits):
        return int(hexdigits, 16)
    raise ConfigurationError(
        ReasonCode.PROFILE_INVALID,
        f"'{text}' is neither a DICOM keyword nor a tag like (0010,0020)",
    )


def is_overlay_group(group: int) -> bool:
    return 0x6000 <= group <= 0x601E and group % 2 == 0


def is_curve_group(group: int) -> bool:
    return 0x5000 <= group <= 0x501E and group % 2 == 0


class RuleSet:
    """Per-tag rules for one profile."""

    def __init__(self, profile: Profile) -> None:
        settings = profile.dicom
        self.profile = profile
        self.options = frozenset(o.value for o in settings.options)
        self.date_method = profile.linkage.dates.method
        self.by_tag: dict[int, Rule] = {}
        self.overlay: dict[int, Rule] = {}
        self.curve: Rule = Rule(Action.REMOVE, "Basic Profile: X", Source.TABLE)
        self.private: Rule = Rule(Action.REMOVE, "Basic Profile: X", Source.TABLE)
        self.rows: dict[int, TableRow] = {}
        self._cache: dict[tuple[int, str], Rule] = {}
        self.method_description = profile.method_description  # hashing the profile: once
        at = {o.value: ("dicom", "options", i) for i, o in enumerate(settings.options)}
        for row in load_table().rows:
            rule = resolve_row(row, self.options, settings.compound_actions, at)
            if row.tag == PRIVATE_PATTERN:
                self.private = rule
            elif row.tag.startswith("(50XX"):
                self.curve = rule
            elif row.tag.startswith("(60XX"):
                self.overlay[int(row.tag[6:10], 16)] = rule
            else:
                self.by_tag[row.tag_int] = rule
                self.rows[row.tag_int] = row
        for row in meta_policy.FILE_META_ROWS:  # AE titles, addresses, private meta block
            rule = resolve_row(row, self.options, settings.compound_actions)
            why = rule.why.replace("Basic Profile", meta_policy.WHY)
            self.by_tag[row.tag_int] = Rule(rule.action, why, meta_policy.SOURCE)
        for index, override in enumerate(settings.overrides):
            tag = parse_attribute(override.attribute)
            why = override.why or "profile override"
            where = ("dicom", "overrides", index)
            self.by_tag[tag] = Rule(
                override.action, why, Source.OVERRIDE, override.value, None, where
            )
        # any rule decided per instance by its IOD: only then is the SOP class looked up
        self.has_compound = any(r.compound is not None for r in self.by_tag.values())
        if any(r.action is Action.AGE_CAP for r in self.by_tag.values()) and (
            settings.age_cap_years is None
        ):
            raise ConfigurationError(
                ReasonCode.PROFILE_INVALID, "action age-cap needs dicom.age_cap_years"
            )
        unlisted = settings.unlisted
        self.unlisted_default = Rule(
            unlisted.default,
            "unlisted attribute default",
            Source.UNLISTED,
            setting=("dicom", "unlisted", "default"),
        )
        self.unlisted_by_vr = {
            vr: Rule(
                action,
                f"unlisted attribute of VR {vr}",
                Source.UNLISTED,
                setting=("dicom", "unlisted", "by_vr", vr),
            )
            for vr, action in unlisted.by_vr.items()
        }
        self.safe_private = {
            (block.creator.strip().upper(), block.group): set(block.elements)
            for block in settings.safe_private
        }

    # ------------------------------------------------------------------------------------
    def has(self, option: ProfileOption) -> bool:
        return option.value in self.options

    def for_tag(self, tag: int, vr: str) -> Rule:
        key = (tag, vr)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._for_tag(tag, vr)
        return cached

    def _for_tag(self, tag: int, vr: str) -> Rule:
        rule = self.by_tag.get(tag)
        if rule is not None:
            return rule
        group = tag >> 16
        if group & 1:
            return self.private
        if is_overlay_group(group):
            return self.overlay.get(tag & 0xFFFF, self.unlisted_default)
        if is_curve_group(group):
            return self.curve
        if vr == "UI":
            if self.has(ProfileOption.RETAIN_UIDS):
                return Rule(Action.KEEP, f"{option_title('retain_uids')}: K", Source.TABLE)
            return Rule(Action.UID, "every instance UID is remapped consistently", Source.UNLISTED)
        return self.unlisted_by_vr.get(vr, self.unlisted_default)

    def date_clean_action(self) -> Action:
        """What 'C' means for a DA/DT: the modification the profile chose, else removal."""
        if self.has(ProfileOption.RETAIN_LONGITUDINAL_FULL_DATES):
            return Action.KEEP
        if self.has(ProfileOption.RETAIN_LONGITUDINAL_MODIFIED_DATES):
            return Action.SHIFT_DATE if self.date_method is DateMethod.SHIFT else Action.YEAR_ONLY
        return Action.EMPTY

    def explain(self, iod: IodTypes | None = None) -> list[dict[str, str]]:
        """Every attribute of the table plus overrides, with effective action and reason.
        Compound codes decided per instance read "by IOD", or with ``iod`` the branch that
        applies to a top-level attribute of that IOD."""
        out = []
        table = load_table()
        for row in table.rows:
            if row.tag == PRIVATE_PATTERN:
                rule = self.private
            elif row.tag.startswith("(50XX"):
                rule = self.curve
            elif row.tag.startswith("(60XX"):
                rule = self.overlay[int(row.tag[6:10], 16)]
            else:
                rule = self.by_tag[row.tag_int]
            tag_int = row.tag_int if not row.is_pattern else None
            out.append(self._row(row.tag, row.keyword or row.name, rule, tag_int, iod))
        listed = {r.tag_int for r in table.rows if not r.is_pattern}
        for tag, rule in sorted(self.by_tag.items()):
            if tag not in listed:
                text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
                out.append(self._row(text, keyword_for_tag(tag) or "", rule, tag, iod))
        unlisted = [(f"any {vr}", rule) for vr, rule in sorted(self.unlisted_by_vr.items())]
        for label, rule in [*unlisted, ("any other", self.unlisted_default)]:
            out.append(
                {
                    "tag": label,
                    "keyword": "(unlisted)",
                    "action": rule.action.value,
                    "why": rule.why,
                    "from": self.profile.decided_by(rule.setting),
                }
            )
        return out

    def _row(
        self, tag: str, keyword: str, rule: Rule, tag_int: int | None, iod: IodTypes | None
    ) -> dict[str, str]:
        return {**self._action(tag, keyword, rule, tag_int, iod),
                "from": self.profile.decided_by(rule.setting)}  # fmt: skip

    def _action(
        self, tag: str, keyword: str, rule: Rule, tag_int: int | None, iod: IodTypes | None
    ) -> dict[str, str]:
        if rule.compound is not None and tag_int is not None:
            if iod is None:
                return {"tag": tag, "keyword": keyword, "action": "by IOD", "why": rule.why}
            kind = iod.type_of(tag_int, None)
            chosen = action_for(rule.compound, kind)
            where = f"Type {kind.value} in {iod.iod}" if kind else f"not in {iod.iod}"
            why = (
                f"Basic Profile: {rule.compound} -> {letter_for(rule.compound, kind)}: "
                f"{where} ({self.profile.dicom.compound_actions.value})"
            )
            return {"tag": tag, "keyword": keyword, "action": chosen.value, "why": why}
        action = rule.action.value
        if rule.action is Action.CLEAN and tag_int is not None:
            try:
                vr = dictionary_VR(tag_int)
            except KeyError:
                vr = ""
            if vr in ("DA", "DT"):
                action = f"clean -> {self.date_clean_action().value}"
            elif vr == "SQ":
                action = "clean (recurse; free text cleaned)"
            elif vr == "PN":
                action = "clean -> dummy"
            elif vr not in ("LO", "LT", "SH", "ST", "UT", "UC"):
                action = "clean -> keep"
        elif rule.action is Action.SET:
            action = f"set '{rule.value}'"
        return {"tag": tag, "keyword": keyword, "action": action, "why": rule.why}
