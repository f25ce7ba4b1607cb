"""Two inputs with one SOPInstanceUID: decided by content and a stable order, never by which
worker process finished last.

The workers of a directory run write each instance under its pseudonymised UIDs, so two inputs
with the same SOPInstanceUID land on one output path. That is rare, and only then is anything
done: each input of the group is run again, in the parent, into a scratch store. Identical
outputs are one instance (the others count as duplicates); otherwise the first input in path
order is delivered and every later one with other content is quarantined as a conflicting
instance. The output is then the same for any number of processes.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from gateway.errors import ReasonCode
from gateway.pipeline.outcome import Outcome, Status
from gateway.pipeline.payload import Payload, PayloadKind


def collisions(refs: list[tuple[int, str]]) -> dict[str, list[int]]:
    """Output reference -> positions of the inputs that wrote it, where more than one did."""
    groups: dict[str, list[int]] = {}
    for position, ref in refs:
        groups.setdefault(ref, []).append(position)
    return {ref: sorted(ps) for ref, ps in groups.items() if len(ps) > 1}


def resolve(
    group: list[tuple[Path, Outcome]],
    output: Path,
    run_into: Callable[[Path, Path], Outcome],
) -> list[Outcome]:
    """New outcomes for the inputs of one collision group (in the group's stable order).

    ``run_into(input, scratch_root)`` runs one input into a scratch folder store and returns
    its outcome; the first input's output is copied to ``output``."""
    with tempfile.TemporaryDirectory(prefix="deid-collision-") as scratch_dir:
        scratch = Path(scratch_dir)
        written: list[bytes | None] = []
        outcomes: list[Outcome] = []
        for n, (path, _) in enumerate(group):
            root = scratch / str(n)
            outcome = run_into(path, root)
            outcomes.append(outcome)
            data = (root / outcome.refs[0]).read_bytes() if outcome.delivered else None
            written.append(data)
        first = next((i for i, data in enumerate(written) if data is not None), None)
        if first is None:
            return outcomes
        ref = outcomes[first].refs[0]
        target = output / ref
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scratch / str(first) / ref, target)
    out: list[Outcome] = []
    for i, outcome in enumerate(outcomes):
        if i == first or written[i] is None:
            out.append(outcome)
        elif written[i] == written[first]:
            out.append(
                Outcome(
                    Status.DUPLICATE,
                    ReasonCode.DUPLICATE_INSTANCE,
                    "the same instance as an earlier input; delivered once",
                    "store",
                    refs=outcome.refs,
                )
            )
        else:
            out.append(
                Outcome(
                    Status.QUARANTINED,
                    ReasonCode.CONFLICTING_INSTANCE,
                    "an earlier input has the same SOPInstanceUID and other content",
                    "store",
                )
            )
    return out


def dicom_payload(path: Path) -> Payload:
    return Payload(PayloadKind.DICOM, str(path), path=path, name=path.name)
