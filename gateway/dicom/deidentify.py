"""Apply the compiled rules to a dataset, recursively (sequences, private, file meta).

The walk touches only what a rule changes: kept non-UID elements are never decoded, so the
header path costs little more than pydicom's own read + write. The caller owns the dataset
(this mutates it); the original values that were replaced are collected as verification needles.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from gateway.dicom import tags as T
from gateway.dicom import vr as V
from gateway.dicom.compound import action_for
from gateway.dicom.identifiers import patient_identity, phi_context
from gateway.dicom.iod import IodTypes, load_iod_table
from gateway.dicom.needles import PATIENT_NAME_TAGS, Needle, NeedleSet, ValueKind, value_kind
from gateway.dicom.rules import Rule, RuleSet, Source, is_curve_group, is_overlay_group
from gateway.dicom.values import dictionary_vr, read_values
from gateway.linkage.context import Linkage, PersonPseudonym
from gateway.linkage.dates import dicom_year_only, shift_dicom_date
from gateway.linkage.pseudonym import RESOLVED_NAMESPACE, PersonRef
from gateway.profiles.model import Action, ProfileOption
from gateway.text.context import PhiContext
from gateway.text.engine import build_text_registry
from gateway.text.scrubber import TextScrubber

Element = DataElement | RawDataElement
CLEANED_TEXT_VRS = V.TEXT_VRS | {"SQ"}  # a cleaned sequence cleans the text inside it
TEXT_CACHE_SIZE = 4096  # cleaned descriptor values kept per process (a series repeats them)
CHANGING = frozenset(Action) - {Action.KEEP, Action.CLEAN}


@dataclass
class InstanceState:
    """Per-instance working state of one de-identification."""

    person: PersonPseudonym
    phi: PhiContext
    needles: set[Needle] = field(default_factory=set)
    produced_dates: set[tuple[int, str]] = field(default_factory=set)  # (tag, value written)
    text_counts: Counter[str] = field(default_factory=Counter)
    dates_changed: int = 0
    dates_removed: int = 0
    changes: int = 0  # elements changed so far: a sequence with none inside is kept as read
    iod: IodTypes | None = None  # the SOP class's IOD: decides compound codes (None: unknown)


@dataclass(frozen=True)
class DeidResult:
    person: PersonPseudonym
    phi: PhiContext
    needles: NeedleSet
    text_counts: Counter[str]
    dates_changed: int
    dates_removed: int


class DicomDeidentifier:
    """Header de-identification for one profile + key; build once, call per instance."""

    def __init__(self, rules: RuleSet, linkage: Linkage, scrubber: TextScrubber | None = None):
        self.rules = rules
        self.linkage = linkage
        self.pseudonymizer = linkage.pseudonymizer
        self.scrubber = scrubber or text_scrubber(rules)
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
        return InstanceState(person=person, phi=phi_context(ds), iod=self._iod_of(ds))

    def _iod_of(self, ds: Dataset) -> IodTypes | None:
        if not self.rules.has_compound:
            return None
        try:
            sop_class = read_values(ds, T.SOP_CLASS_UID, "UI")
        except (ValueError, TypeError, UnicodeError):  # undecodable: as for an unknown class
            return None
        return load_iod_table().for_sop_class(sop_class[0]) if sop_class else None

    def deidentify(self, ds: Dataset, state: InstanceState | None = None) -> DeidResult:
        state = state or self.prepare(ds)
        self._walk(ds, state, inherited=None, parent=None)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            self._walk(meta, state, inherited=None, parent=None)
            if T.SOP_INSTANCE_UID in ds:  # the file meta follows the (remapped) instance UID
                meta[T.MEDIA_STORAGE_SOP_INSTANCE_UID] = DataElement(
                    T.MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", ds[T.SOP_INSTANCE_UID].value
                )
        return DeidResult(
            state.person,
            state.phi,
            NeedleSet(frozenset(state.needles), frozenset(state.produced_dates)),
            state.text_counts,
            state.dates_changed,
            state.dates_removed,
        )

    # -- the walk ---------------------------------------------------------------------------
    def _walk(
        self, ds: Dataset, state: InstanceState, inherited: Action | None, parent: int | None
    ) -> None:
        """``parent``: the sequence whose item ``ds`` is (None at the top level)."""
        creators: dict[int, str] = {}
        keep_private = self.retain_safe_private and bool(self.rules.safe_private)
        for key, item in list(ds.items()):  # raw elements stay raw; no lookups by tag
            tag = int(key)
            group, element = tag >> 16, tag & 0xFFFF
            if group & 1:
                if keep_private:
                    if 0x10 <= element <= 0xFF:
                        creators[tag] = str(ds[tag].value or "").strip().upper()
                    if self._keep_private(ds, tag, creators):
                        continue
                del ds[tag]  # private values are vendor data: removed, never decoded
                state.changes += 1
                continue
            if (self.drop_overlays and is_overlay_group(group)) or (
                self.drop_curves and is_curve_group(group)
            ):
                del ds[tag]
                state.changes += 1
                continue
            vr = item.VR
            if not vr or vr == "UN":
                vr = dictionary_vr(tag)  # implicit VR, or an explicit UN pydicom would resolve
            rule = self.rules.for_tag(tag, vr)
            action = rule.action
            if rule.compound is not None and state.iod is not None:
                action = self._compound(rule.compound, tag, parent, state.iod, action)
            if (
                inherited is not None
                and rule.source == Source.UNLISTED
                and (vr in V.TEXT_VRS or vr == "SQ")  # nested sequences pass the context on
                and keyword_for_tag(tag) not in V.CODED_KEYWORDS
            ):
                action = inherited
            if action is Action.KEEP and vr not in ("UI", "SQ"):
                continue
            self._apply(ds, tag, vr, action, rule, state, item)

    @staticmethod
    def _compound(
        code: str, tag: int, parent: int | None, iod: IodTypes, default: Action
    ) -> Action:
        """A compound code by the attribute's type here: in the IOD at the top level, in the
        containing sequence's macro when nested. Nested where the standard's tables do not
        define the pair (a private or non-standard sequence): the unknown-class choice."""
        attribute_type = iod.type_of(tag, parent)
        if attribute_type is None and parent is not None:
            return default
        return action_for(code, attribute_type)

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

    def _remember(
        self, ds: Dataset, tag: int, vr: str, state: InstanceState, item: Element
    ) -> None:
        """Keep the original value of something we change, so verification can look for it.
        Decides from tag and VR first: most removed values are never decoded."""
        if vr in V.NUMERIC_VRS or vr in V.BINARY_VRS or vr == "SQ":
            return
        if (tag >> 16) & 1 or not _identifying_tag(tag, vr):
            return  # descriptors and vendor data are removed for what they *may* hold
        try:
            values = read_values(ds, tag, vr, item)
        except Exception:  # noqa: BLE001 - an undecodable value: nothing to search for
            return
        patient_name = tag in PATIENT_NAME_TAGS
        for text in values:
            if patient_name:
                parts = text.replace("=", "^").split("^")
                state.needles.update(
                    Needle(p.strip(), ValueKind.NAME_PART, tag)
                    for p in parts
                    if len(p.strip()) >= 4
                )
            if len(text) >= 4 and text not in V.DUMMY_VALUES:
                state.needles.add(Needle(text, value_kind(tag, vr, text), tag))

    def _apply(
        self,
        ds: Dataset,
        tag: int,
        vr: str,
        action: Action,
        rule: Rule,
        state: InstanceState,
        item: Element,
    ) -> None:
        if vr == "SQ":
            before = state.changes
            self._apply_sequence(ds, ds[tag], action, state)
            if (
                state.changes == before
                and isinstance(item, RawDataElement)
                and item.value is not None
            ):
                ds[tag] = item  # nothing inside changed: written back byte for byte, as read
            return
        if vr == "UI":
            self._apply_uid(ds, tag, action, state, item)
            return
        if action is Action.CLEAN:
            action = self._clean_meaning(vr)
            if action is Action.CLEAN:
                self._clean_text(ds[tag], vr, state)
                return
        if action is Action.KEEP:
            return
        state.changes += 1
        if action in CHANGING:
            self._remember(ds, tag, vr, state, item)  # decodes only what verification needs
        if action is Action.REMOVE:
            if vr in V.DATE_VRS:
                state.dates_removed += 1
            del ds[tag]
        elif action is Action.EMPTY:
            if vr in V.DATE_VRS and _present(ds, tag):
                state.dates_removed += 1
            _set(ds, tag, vr, b"" if vr in V.BINARY_VRS else None)
        elif action is Action.DUMMY:
            if _present(ds, tag):
                _set(ds, tag, vr, V.dummy_for(vr))
        elif action is Action.PATIENT_PSEUDONYM:
            _set(ds, tag, vr, V.fit(vr, state.person.patient_id))
        elif action is Action.ACCESSION_PSEUDONYM:
            values = read_values(ds, tag, vr, item)
            if values:
                _set(ds, tag, vr, self.pseudonymizer.accession(values[0]))
        elif action is Action.HASH:
            length = min(V.MAX_LENGTH.get(vr, 26), 26)
            domain = keyword_for_tag(tag) or str(tag)
            hashed = [
                self.pseudonymizer.identifier(domain, v, length)
                for v in read_values(ds, tag, vr, item)
            ]
            _set(ds, tag, vr, _one_or_many(hashed))
        elif action in (Action.SHIFT_DATE, Action.YEAR_ONLY):
            self._change_dates(ds, tag, vr, action, state, item)
        elif action is Action.AGE_CAP:
            cap = self.rules.profile.dicom.age_cap_years
            _set(
                ds,
                tag,
                vr,
                _one_or_many([_cap_age(v, cap) for v in read_values(ds, tag, vr, item)]),
            )
        elif action is Action.SET:
            _set(ds, tag, vr, rule.value)
        elif action is Action.UID:
            _set(ds, tag, vr, V.dummy_for(vr))

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
            state.changes += 1
            elem.value = cleaned if len(cleaned) > 1 else cleaned[0]

    def _change_dates(
        self, ds: Dataset, tag: int, vr: str, action: Action, state: InstanceState, item: Element
    ) -> None:
        out = []
        for text in read_values(ds, tag, vr, item):
            if action is Action.SHIFT_DATE:
                new = shift_dicom_date(text, state.person.date_offset_days)
            else:
                new = dicom_year_only(text)
            if new is None:
                state.dates_removed += 1
                continue
            if new != text:
                state.needles.add(Needle(text[:8], ValueKind.DATE, tag))
            state.produced_dates.add((tag, new))  # written here: no leak (year-only: 20240101)
            state.dates_changed += 1
            out.append(new)
        _set(ds, tag, vr, _one_or_many(out))

    def _apply_uid(
        self, ds: Dataset, tag: int, action: Action, state: InstanceState, item: Element
    ) -> None:
        if action is Action.KEEP:
            return
        if keyword_for_tag(tag) in V.CLASS_UID_KEYWORDS and action is not Action.REMOVE:
            return  # a class is no instance: kept, unless a rule removes it (file meta policy)
        values = read_values(ds, tag, "UI", item)
        state.changes += 1
        if action in (Action.REMOVE, Action.EMPTY):
            state.needles.update(Needle(v, ValueKind.UID, tag) for v in values)
            if action is Action.REMOVE:
                del ds[tag]
            else:
                _set(ds, tag, "UI", None)
            return
        # U, D, C on a UID: remap consistently (a dummy UID would break references)
        new = []
        for text in values:
            if text.startswith(V.WELL_KNOWN_UID_PREFIX):
                new.append(text)
                continue
            state.needles.add(Needle(text, ValueKind.UID, tag))
            new.append(self.pseudonymizer.uid(text))
        _set(ds, tag, "UI", _one_or_many(new))

    def _apply_sequence(
        self, ds: Dataset, elem: DataElement, action: Action, state: InstanceState
    ) -> None:
        if action in (Action.REMOVE, Action.EMPTY):
            state.changes += 1
            if action is Action.REMOVE:
                del ds[elem.tag]
            else:
                elem.value = Sequence()
            return
        inherited = action if action in (Action.DUMMY, Action.CLEAN) else None
        for item in elem.value or []:
            self._walk(item, state, inherited, parent=int(elem.tag))


def text_scrubber(rules: RuleSet) -> TextScrubber:
    """Free text under Clean runs the FHIR free-text engine (deny-list, patterns, identifiers
    by cue and, with ``fhir.free_text.nlp``, Presidio behind the clinical-vocabulary filter),
    with results cached per (value, patient context). A profile that cleans no text never
    needs the NLP model, so it is not asked for."""
    settings = rules.profile.fhir.free_text
    if settings.nlp and not cleans_text(rules):
        settings = settings.model_copy(update={"nlp": False})
    registry = build_text_registry(settings, descriptors=True)
    return TextScrubber(registry, cache_size=TEXT_CACHE_SIZE)


def cleans_text(rules: RuleSet) -> bool:
    """Whether any text attribute (listed, overridden or unlisted) is cleaned."""
    if rules.unlisted_default.action is Action.CLEAN or any(
        rule.action is Action.CLEAN for vr, rule in rules.unlisted_by_vr.items() if vr in V.TEXT_VRS
    ):
        return True
    return any(
        rule.action is Action.CLEAN and dictionary_vr(tag) in CLEANED_TEXT_VRS
        for tag, rule in rules.by_tag.items()
    )


_IDENTIFYING_KEYWORD = re.compile(
    r"(Patient|Person|Physician|Operator|Institution|Address|Telephone|Station|Issuer|Mother|"
    r"Military|Insurance)|(ID|IDs|Number|Numbers|Identifier|Locator)$"
)


@lru_cache(maxsize=4096)
def _identifying_tag(tag: int, vr: str) -> bool:
    return is_identifying(keyword_for_tag(tag) or "", vr)


def is_identifying(keyword: str, vr: str) -> bool:
    """Attributes whose value identifies (names, IDs, addresses, phones, institutions, dates,
    UIDs): their original values become verification needles. Times of day alone do not."""
    if vr in ("PN", "UI", "DA", "DT"):
        return True
    if vr in ("TM", "CS", "AS") or vr in V.NUMERIC_VRS or vr in V.BINARY_VRS:
        return False
    return bool(_IDENTIFYING_KEYWORD.search(keyword or ""))


def _present(ds: Dataset, tag: int) -> bool:
    raw = ds.get_item(tag, keep_deferred=True)
    if isinstance(raw, RawDataElement):
        return bool(raw.length)
    return raw.value not in (None, "", b"") and raw.value != []


def _set(ds: Dataset, tag: int, vr: str, value: object) -> None:
    """Replace an element without decoding the old value."""
    ds[tag] = DataElement(tag, vr, value)


def _one_or_many(values: list[str]) -> object:
    return (values if len(values) > 1 else values[0]) if values else None


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
