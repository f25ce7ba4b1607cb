"""Apply the compiled rules to a dataset, recursively (sequences, private, file meta).

The walk touches only what a rule changes: kept non-UID elements are never decoded, so the
header path costs little more than pydicom's own read + write. The caller owns the dataset
(this mutates it); the original values that were replaced are collected as verification needles.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from gateway.dicom import vr as V
from gateway.dicom.identifiers import patient_identity, phi_context
from gateway.dicom.rules import Rule, RuleSet, Source, is_curve_group, is_overlay_group
from gateway.linkage.context import Linkage, PersonPseudonym
from gateway.linkage.dates import dicom_year_only, shift_dicom_date
from gateway.linkage.pseudonym import RESOLVED_NAMESPACE, PersonRef
from gateway.profiles.model import Action, ProfileOption
from gateway.text.context import PhiContext
from gateway.text.scrubber import TextScrubber

CHANGING = frozenset(Action) - {Action.KEEP, Action.CLEAN}
# Patient's own names: their parts are needles too (a surname alone identifies in context).
PATIENT_NAME_TAGS = frozenset({0x00100010, 0x00101001, 0x00101005, 0x00101060})


@dataclass
class InstanceState:
    """Per-instance working state of one de-identification."""

    person: PersonPseudonym
    phi: PhiContext
    needles: set[str] = field(default_factory=set)
    text_counts: Counter[str] = field(default_factory=Counter)
    dates_changed: int = 0
    dates_removed: int = 0


@dataclass(frozen=True)
class DeidResult:
    person: PersonPseudonym
    phi: PhiContext
    needles: frozenset[str]
    text_counts: Counter[str]
    dates_changed: int
    dates_removed: int


def _vr_of(ds: Dataset, tag: int) -> str:
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag)).split(" ")[0]
    except KeyError:
        return "UN"


class DicomDeidentifier:
    """Header de-identification for one profile + key; build once, call per instance."""

    def __init__(self, rules: RuleSet, linkage: Linkage, scrubber: TextScrubber | None = None):
        self.rules = rules
        self.linkage = linkage
        self.pseudonymizer = linkage.pseudonymizer
        self.scrubber = scrubber or TextScrubber()
        self.date_clean = rules.date_clean_action()
        overlay_data = rules.overlay.get(0x3000)
        self.drop_overlays = overlay_data is None or overlay_data.action in (
            Action.REMOVE,
            Action.CLEAN,
        )
        self.drop_curves = rules.curve.action in (Action.REMOVE, Action.CLEAN)
        self.retain_safe_private = rules.has(ProfileOption.RETAIN_SAFE_PRIVATE)

    # -- entry points -----------------------------------------------------------------------
    def prepare(self, ds: Dataset, person_key: str | None = None) -> InstanceState:
        """Read who the instance belongs to, before anything is changed. ``person_key`` comes
        from the identity index when the service has one (it may link identifiers)."""
        if person_key is not None:
            person = self.linkage.person(PersonRef(RESOLVED_NAMESPACE, person_key))
        else:
            identifier, issuer, _ = patient_identity(ds)
            person = self.linkage.person_from_dicom(identifier, issuer)
        return InstanceState(person=person, phi=phi_context(ds))

    def deidentify(self, ds: Dataset, state: InstanceState | None = None) -> DeidResult:
        state = state or self.prepare(ds)
        self._walk(ds, state, inherited=None)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            self._walk(meta, state, inherited=None)
            if "SOPInstanceUID" in ds:
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return DeidResult(
            state.person,
            state.phi,
            frozenset(state.needles),
            state.text_counts,
            state.dates_changed,
            state.dates_removed,
        )

    # -- the walk ---------------------------------------------------------------------------
    def _walk(self, ds: Dataset, state: InstanceState, inherited: Action | None) -> None:
        creators: dict[int, str] = {}
        for key in list(ds.keys()):
            tag = int(key)
            group, element = tag >> 16, tag & 0xFFFF
            if group & 1:
                if 0x10 <= element <= 0xFF:
                    creators[(group << 16) | element] = str(ds[tag].value or "").strip().upper()
                if not self._keep_private(ds, tag, creators):
                    self._remember(ds, tag, state)
                    del ds[tag]
                continue
            if (self.drop_overlays and is_overlay_group(group)) or (
                self.drop_curves and is_curve_group(group)
            ):
                del ds[tag]
                continue
            vr = _vr_of(ds, tag)
            rule = self.rules.for_tag(tag, vr)
            action = rule.action
            if (
                inherited is not None
                and rule.source == Source.UNLISTED
                and vr in V.TEXT_VRS
                and keyword_for_tag(tag) not in V.CODED_KEYWORDS
            ):
                action = inherited
            if action is Action.KEEP and vr not in ("UI", "SQ"):
                continue
            self._apply(ds, tag, vr, action, rule, state)

    def _keep_private(self, ds: Dataset, tag: int, creators: dict[int, str]) -> bool:
        if not self.retain_safe_private or not self.rules.safe_private:
            return False
        group, element = tag >> 16, tag & 0xFFFF
        if 0x10 <= element <= 0xFF:
            creator = creators.get(tag, "")
            return any(c == creator for c, _ in self.rules.safe_private)
        if element < 0x1000:
            return False
        creator = creators.get((group << 16) | (element >> 8), "")
        for key in ((creator, group), (creator, None)):
            allowed = self.rules.safe_private.get(key)
            if allowed is not None and (element & 0xFF) in allowed:
                return True
        return False

    def _remember(self, ds: Dataset, tag: int, state: InstanceState) -> None:
        """Keep the original value of something we change, so verification can look for it."""
        try:
            elem = ds[tag]
        except Exception:  # an undecodable private element: nothing we can search for
            return
        if elem.VR in V.NUMERIC_VRS or elem.VR in V.BINARY_VRS or elem.VR == "SQ":
            return
        if (tag >> 16) & 1 or not is_identifying(elem.keyword, elem.VR):
            return  # descriptors and vendor data are removed for what they *may* hold
        patient_name = tag in PATIENT_NAME_TAGS
        for value in _as_list(elem.value):
            text = str(value).strip()
            if patient_name:
                parts = text.replace("=", "^").split("^")
                state.needles.update(p.strip() for p in parts if len(p.strip()) >= 4)
            if len(text) >= 4 and text not in V.DUMMY_VALUES:
                state.needles.add(text)

    def _apply(
        self, ds: Dataset, tag: int, vr: str, action: Action, rule: Rule, state: InstanceState
    ) -> None:
        elem = ds[tag]
        vr = elem.VR or vr
        if vr == "SQ":
            self._apply_sequence(ds, elem, action, state)
            return
        if vr == "UI":
            self._apply_uid(elem, action, state)
            return
        if action is Action.CLEAN:
            action = self._clean_meaning(vr)
            if action is Action.CLEAN:
                self._clean_text(elem, vr, state)
                return
        if action is Action.KEEP:
            return
        if action in CHANGING:
            self._remember(ds, tag, state)
        if action is Action.REMOVE:
            if vr in V.DATE_VRS:
                state.dates_removed += 1
            del ds[tag]
        elif action is Action.EMPTY:
            if vr in V.DATE_VRS and elem.value:
                state.dates_removed += 1
            elem.value = b"" if vr in V.BINARY_VRS else None
        elif action is Action.DUMMY:
            if elem.value not in (None, "", b""):
                elem.value = V.dummy_for(vr)
        elif action is Action.PATIENT_PSEUDONYM:
            elem.value = V.fit(vr, state.person.patient_id)
        elif action is Action.ACCESSION_PSEUDONYM:
            if str(elem.value or "").strip():
                elem.value = self.pseudonymizer.accession(str(elem.value))
        elif action is Action.HASH:
            length = min(V.MAX_LENGTH.get(vr, 26), 26)
            elem.value = [
                self.pseudonymizer.identifier(keyword_for_tag(tag) or str(tag), str(v), length)
                for v in _as_list(elem.value)
            ] or None
        elif action in (Action.SHIFT_DATE, Action.YEAR_ONLY):
            self._change_dates(elem, vr, action, state)
        elif action is Action.AGE_CAP:
            elem.value = _cap_age(str(elem.value or ""), self.rules.profile.dicom.age_cap_years)
        elif action is Action.SET:
            elem.value = rule.value
        elif action is Action.UID:
            elem.value = V.dummy_for(vr)

    def _clean_meaning(self, vr: str) -> Action:
        """What C means for this VR: dates modified as the profile says, names replaced, free
        text cleaned, anything else (times, numbers, codes) kept."""
        if vr in V.DATE_VRS:
            return self.date_clean
        if vr == "PN":
            return Action.DUMMY
        if vr in V.TEXT_VRS:
            return Action.CLEAN
        if vr in V.BINARY_VRS:
            return Action.REMOVE
        return Action.KEEP

    def _clean_text(self, elem: DataElement, vr: str, state: InstanceState) -> None:
        values = _as_list(elem.value)
        cleaned = []
        changed = False
        for value in values:
            result = self.scrubber.clean(str(value), state.phi)
            if result.changed:
                changed = True
                state.text_counts.update(result.counts)
            cleaned.append(V.fit(vr, result.text))
        if changed:
            elem.value = cleaned if len(cleaned) > 1 else cleaned[0]

    def _change_dates(
        self, elem: DataElement, vr: str, action: Action, state: InstanceState
    ) -> None:
        out = []
        for value in _as_list(elem.value):
            text = str(value)
            if action is Action.SHIFT_DATE:
                new = shift_dicom_date(text, state.person.date_offset_days)
            else:
                new = dicom_year_only(text)
            if new is None:
                state.dates_removed += 1
                continue
            if new != text:
                state.needles.add(text.strip()[:8])
            state.dates_changed += 1
            out.append(new)
        elem.value = (out if len(out) > 1 else out[0]) if out else None

    def _apply_uid(self, elem: DataElement, action: Action, state: InstanceState) -> None:
        if action is Action.KEEP or keyword_for_tag(elem.tag) in V.CLASS_UID_KEYWORDS:
            return
        if action in (Action.REMOVE, Action.EMPTY):
            for value in _as_list(elem.value):
                state.needles.add(str(value).strip())
            elem.value = None
            return
        # U, D, C on a UID: remap consistently (a dummy UID would break references)
        new = []
        for value in _as_list(elem.value):
            text = str(value).strip().rstrip("\x00")
            if not text or text.startswith(V.WELL_KNOWN_UID_PREFIX):
                new.append(text)
                continue
            state.needles.add(text)
            new.append(self.pseudonymizer.uid(text))
        elem.value = new if len(new) > 1 else (new[0] if new else None)

    def _apply_sequence(
        self, ds: Dataset, elem: DataElement, action: Action, state: InstanceState
    ) -> None:
        if action is Action.REMOVE:
            del ds[elem.tag]
            return
        if action is Action.EMPTY:
            elem.value = Sequence()
            return
        inherited = action if action in (Action.DUMMY, Action.CLEAN) else None
        for item in elem.value or []:
            self._walk(item, state, inherited)


_IDENTIFYING_KEYWORD = re.compile(
    r"(Patient|Person|Physician|Operator|Institution|Address|Telephone|Station|Issuer|Mother|"
    r"Military|Insurance)|(ID|IDs|Number|Numbers|Identifier|Locator)$"
)


def is_identifying(keyword: str, vr: str) -> bool:
    """Attributes whose value identifies (names, IDs, addresses, phones, institutions, dates,
    UIDs): their original values become verification needles. Times of day alone do not."""
    if vr in ("PN", "UI", "DA", "DT"):
        return True
    if vr in ("TM", "CS", "AS") or vr in V.NUMERIC_VRS or vr in V.BINARY_VRS:
        return False
    return bool(_IDENTIFYING_KEYWORD.search(keyword or ""))


def _as_list(value: object) -> list[object]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, MultiValue)):
        return list(value)
    return [value]


def _cap_age(value: str, cap: int | None) -> str:
    if cap is None or len(value) != 4 or value[3] != "Y" or not value[:3].isdigit():
        return value
    return f"{cap + 1:03d}Y" if int(value[:3]) > cap else value
