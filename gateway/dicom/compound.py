"""PS3.15 compound codes decided by the attribute's type in the instance's IOD.

X/Z, X/D, Z/D, X/Z/D and X/Z/U* mean "the least destructive choice that keeps the instance
conformant". Under ``compound_actions: preserve-conformance`` the type of the attribute in the
IOD of the instance's SOP Class decides (PS3.15 E.1.1):

- Type 1/1C (a value is required): a dummy, or for X/Z/U* the UIDs remapped; never empty.
- Type 2/2C (present, may be empty): zero length (an X/D code: a dummy, X would drop it).
- Type 3, or not in the IOD: removed (a Z/D code: zero length). An empty Type 3 sequence is an
  error ("1-n items required"), which is why removal, not emptying, preserves conformance.

A required sequence is kept with its items cleaned (each item attribute by its own rule), never
emptied; a reference sequence (X/Z/U*) that must be present keeps its references, UIDs
remapped. Inside a sequence the type is the one the containing sequence's macro gives.
"""

from __future__ import annotations

from enum import Enum

from gateway.dicom.iod import AttributeType
from gateway.profiles.model import Action


class Need(str, Enum):
    """What a type asks of a present attribute."""

    VALUE = "value"  # Type 1, 1C
    PRESENCE = "presence"  # Type 2, 2C
    NOTHING = "nothing"  # Type 3, or not in the IOD

    @property
    def types(self) -> str:
        return NEED_TYPES[self]


NEED = {
    AttributeType.TYPE_1: Need.VALUE,
    AttributeType.TYPE_1C: Need.VALUE,
    AttributeType.TYPE_2: Need.PRESENCE,
    AttributeType.TYPE_2C: Need.PRESENCE,
    AttributeType.TYPE_3: Need.NOTHING,
}
NEED_TYPES = {Need.VALUE: "Type 1/1C", Need.PRESENCE: "Type 2/2C", Need.NOTHING: "Type 3/absent"}

# code -> need -> the letter chosen. Data, read as PS3.15 E.1.1 says.
BY_NEED: dict[str, dict[Need, str]] = {
    "X/Z": {Need.VALUE: "D", Need.PRESENCE: "Z", Need.NOTHING: "X"},
    "X/D": {Need.VALUE: "D", Need.PRESENCE: "D", Need.NOTHING: "X"},
    "Z/D": {Need.VALUE: "D", Need.PRESENCE: "Z", Need.NOTHING: "Z"},
    "X/Z/D": {Need.VALUE: "D", Need.PRESENCE: "Z", Need.NOTHING: "X"},
    # A Type 2 reference sequence keeps its (remapped) references: emptied, it breaks the
    # conditions of the instance's other references (a Common Instance Reference Module that
    # lists instances nothing refers to any more); the "U*" of the code is for that case.
    "X/Z/U*": {Need.VALUE: "U", Need.PRESENCE: "U", Need.NOTHING: "X"},
}
LETTER_ACTIONS = {"X": Action.REMOVE, "Z": Action.EMPTY, "D": Action.DUMMY, "U": Action.UID}


def need_of(attribute_type: AttributeType | None) -> Need:
    return Need.NOTHING if attribute_type is None else NEED[attribute_type]


def letter_for(code: str, attribute_type: AttributeType | None) -> str:
    return BY_NEED[code][need_of(attribute_type)]


def action_for(code: str, attribute_type: AttributeType | None) -> Action:
    """The action of compound ``code`` for an attribute of ``attribute_type`` (None: not in
    the IOD). A dummy on a sequence keeps its items, cleaned by their own rules."""
    return LETTER_ACTIONS[letter_for(code, attribute_type)]


def describe(code: str) -> str:
    """One line for ``profile explain``: which branch applies to which type."""
    return ", ".join(f"{need.types} {letter}" for need, letter in BY_NEED[code].items())
