"""What the runner says about one payload: one :class:`Outcome`, whatever door it came through.

The CLI summary, the service's item rows, ``/jobs`` and the manifests are all views of
outcomes; none of them decides anything the runner did not.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ReasonCode
from gateway.linkage.issued import Issued


class Status(str, enum.Enum):
    FORWARDED = "forwarded"  # de-identified, verified, written to the research store
    DROPPED = "dropped"  # not delivered by policy (DICOMDIR, encapsulated documents)
    DUPLICATE = "duplicate"  # the same instance as one already delivered: one output
    PENDING = "pending"  # waits for its Patient
    RETRY = "retry"  # the research store is unavailable: nothing is wrong with the data
    QUARANTINED = "quarantined"  # cannot be made safe: kept with its reason, never forwarded


@dataclass(frozen=True)
class Outcome:
    """``refs`` are pseudonymised references of what was written (never PHI); ``learned`` the
    identity hashes of Patients learned, which may release payloads waiting for them."""

    status: Status
    reason: ReasonCode | None = None
    detail: str = ""
    stage: str | None = None
    refs: tuple[str, ...] = ()
    resources: int = 0
    text_counts: tuple[tuple[str, int], ...] = ()
    waiting_for: str | None = None
    learned: tuple[str, ...] = ()
    undeclared: tuple[str, ...] = ()  # register names (issuers, systems) no namespace declares
    issues: dict[str, Any] = field(default_factory=dict, compare=False)  # OperationOutcome
    # pseudonym -> original of what was delivered, for the broker vault: PHI, so never in a
    # record, a row's JSON or a repr; the settler seals it in the item's commit
    issued: tuple[Issued, ...] = field(default=(), compare=False, repr=False)

    @property
    def delivered(self) -> bool:
        return self.status is Status.FORWARDED

    def record(self) -> dict[str, Any]:
        """The value-free record kept with a quarantined payload (folder and database alike)."""
        out: dict[str, Any] = {
            "status": self.status.value,
            "reason": self.reason.value if self.reason else None,
            "detail": self.detail,
            "stage": self.stage,
        }
        if self.issues:
            out["operationOutcome"] = self.issues
        return out

    def to_json(self) -> dict[str, Any]:
        """Everything, value-free, for a row (a distributed batch run's file outcomes)."""
        return {
            **self.record(),
            "refs": list(self.refs),
            "resources": self.resources,
            "text_counts": [list(pair) for pair in self.text_counts],
            "waiting_for": self.waiting_for,
            "learned": list(self.learned),
            "undeclared": list(self.undeclared),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(
            Status(data["status"]),
            ReasonCode(data["reason"]) if data.get("reason") else None,
            data.get("detail") or "",
            data.get("stage"),
            refs=tuple(data.get("refs") or ()),
            resources=int(data.get("resources") or 0),
            text_counts=tuple((str(k), int(n)) for k, n in data.get("text_counts") or ()),
            waiting_for=data.get("waiting_for"),
            learned=tuple(data.get("learned") or ()),
            undeclared=tuple(data.get("undeclared") or ()),
            issues=data.get("operationOutcome") or {},
        )
