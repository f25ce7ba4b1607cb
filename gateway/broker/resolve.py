"""Pseudonyms of a returned result -> originals, for one destination, through the vault.

A pseudonym the vault holds for another destination is a result sent to the wrong door (or
an attempt to reach another project's patients): ``foreign-pseudonym``. One it does not hold
at all was never issued here: ``unknown-pseudonym``. Either way the result is quarantined
and never forwarded; the reason names the kind of identifier, never the value.
"""

from __future__ import annotations

import hashlib
import hmac

from pydicom.uid import generate_uid

from gateway.broker.returned import ReturnedUids
from gateway.broker.vault import Found, Vault
from gateway.errors import QuarantineError, ReasonCode, StoreUnavailable
from gateway.linkage.issued import IssuedKind

STAGE = "return"


class ReturnResolver:
    """Per payload (its cache is that payload's): ``find`` / ``require`` pseudonyms, ``mint``
    new identifiers in the hospital's root for what the partner made (``minted``: the
    partner's UIDs that got one, recorded once the object is stored), and map the UIDs of
    objects the partner returned before (``returned``)."""

    def __init__(
        self,
        vault: Vault,
        destination: str,
        uid_root: str,
        returned: ReturnedUids | None = None,
        item_id: str | None = None,
    ) -> None:
        self.vault = vault
        self.destination = destination
        self.uid_root = uid_root.rstrip(".") + "."
        self.returned = returned
        self.item_id = item_id  # the job item of this payload (its request's other parts)
        self.minted: set[str] = set()
        self._cache: dict[str, list[Found]] = {}

    def find(self, value: str, kinds: tuple[IssuedKind, ...]) -> Found | None:
        """The destination's row for ``value`` among ``kinds``; None when no row has it;
        QuarantineError(foreign-pseudonym) when only another destination's rows do."""
        rows = self._cache.get(value)
        if rows is None:
            rows = self._cache[value] = self.vault.find(value)
        mine = [r for r in rows if r.destination == self.destination and r.kind in kinds]
        if mine:
            return max(mine, key=lambda r: len(r.context))
        if any(r.kind in kinds for r in rows):
            raise QuarantineError(
                ReasonCode.FOREIGN_PSEUDONYM,
                f"a {kinds[0].value} pseudonym of another destination is referenced",
                stage=STAGE,
            )
        return None

    def require(self, value: str, kinds: tuple[IssuedKind, ...], where: str) -> Found:
        found = self.find(value, kinds)
        if found is None:
            raise QuarantineError(
                ReasonCode.UNKNOWN_PSEUDONYM,
                f"{where} references a {kinds[0].value} this gateway never issued",
                stage=STAGE,
            )
        return found

    def mint_uid(self, partner_uid: str) -> str:
        """A new UID in the hospital's root, the same for the same partner UID (a retry or a
        resend stores the same object, not a second one)."""
        self.minted.add(partner_uid)
        return self._new_uid(partner_uid)

    def _new_uid(self, partner_uid: str) -> str:
        return str(generate_uid(self.uid_root, entropy_srcs=[self.destination, partner_uid]))

    def returned_uid(self, partner_uid: str) -> str | None:
        """The new UID of an object the partner returned before (its own UIDs were recorded
        when it was stored), None when the partner returned no such object."""
        if self.returned is None or not self.returned.contains(self.destination, partner_uid):
            return None
        return self._new_uid(partner_uid)

    def map_uid(self, value: str, where: str) -> str:
        """A referenced UID: its original when the gateway issued it, the new UID of a
        returned object when the partner returned it, else QuarantineError."""
        found = self.find(value, (IssuedKind.UID,))
        if found is not None:
            return found.original
        new = self.returned_uid(value)
        if new is not None:
            return new
        self.await_earlier_parts()
        raise QuarantineError(
            ReasonCode.UNKNOWN_PSEUDONYM,
            f"{where} references a uid this gateway never issued nor the partner returned",
            stage=STAGE,
        )

    def await_earlier_parts(self) -> None:
        """StoreUnavailable (the item is retried) while an earlier part of the same request
        may still be stored: the object cited may be that part, taken by another worker."""
        if (
            self.returned is not None
            and self.item_id is not None
            and self.returned.earlier_unsettled(self.item_id)
        ):
            raise StoreUnavailable(
                "an unknown uid is referenced while an earlier part of the request waits to "
                "be stored: retried after it",
                reason=ReasonCode.AWAITING_RETURNED,
            )

    def mint_id(self, resource_type: str, partner_id: str) -> str:
        """A new FHIR logical id, the same for the same partner resource (idempotent PUT)."""
        message = f"{self.destination}|{resource_type}|{partner_id}".encode()
        return "r" + hmac.new(self.vault.key.index_key, message, hashlib.sha256).hexdigest()[:40]
