"""What a destination's profile would do to one payload, run by the one runner with a store that
keeps nothing: the outcome (forwarded, or quarantined with its reason), the header before and
after, the frames with what the pixel stage filled, the FHIR before and after.

Nothing is written: the store keeps the result in memory for this call, and the patients are
known from the payload alone (an in-memory index, as a directory run has), so a preview adds
no identity link. The original values are only in the result when ``with_original`` is set:
the caller decides who may see them (the privacy officer).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from gateway.dicom import tags as T
from gateway.dicom.listing import flatten
from gateway.dicom.reader import read_dicom
from gateway.errors import DeidError
from gateway.fhir.resolver import InMemoryPatientIndex
from gateway.linkage.context import Linkage
from gateway.pipeline.destinations import Destination
from gateway.pipeline.dicom_stages import ProcessedInstance
from gateway.pipeline.outcome import Outcome
from gateway.pipeline.patients import RunDirectory
from gateway.pipeline.payload import Payload, PayloadKind
from gateway.pipeline.runner import Runner
from gateway.profiles.model import Profile

#: multi-frame images are shown smaller, so that every frame fits in one page
FRAME_LONG_SIDE = {True: 384, False: 768}
MANY_FRAMES = 8


@dataclass(frozen=True)
class HeaderRow:
    where: str
    keyword: str
    before: str | None  # None: not shown (the caller may not see originals) or absent
    after: str | None  # None: removed
    changed: bool


@dataclass(frozen=True)
class Outline:
    """A filled area in frame pixel coordinates; ``kind`` is ``redacted`` or ``kept``."""

    x: int
    y: int
    width: int
    height: int
    kind: str
    source: str


@dataclass(frozen=True)
class FramePreview:
    index: int
    width: int
    height: int
    after_png: bytes
    before_png: bytes | None
    outlines: tuple[Outline, ...]


@dataclass
class Preview:
    kind: str  # dicom | fhir
    outcome: Outcome
    with_original: bool
    rows: list[HeaderRow] = field(default_factory=list)
    frames: list[FramePreview] = field(default_factory=list)
    frame_note: str = ""
    fhir_before: str | None = None
    fhir_after: str | None = None
    fhir_diff: list[str] = field(default_factory=list)
    processed: ProcessedInstance | None = None  # what the stages made (DICOM, when they ran)

    @property
    def changed_rows(self) -> int:
        return sum(1 for r in self.rows if r.changed)


class _KeepNothing:
    """A research store that stores nothing: it keeps this call's result for the preview."""

    name = "preview"

    def __init__(self) -> None:
        self.dicom: Dataset | None = None
        self.fhir: list[dict[str, Any]] = []

    def put_dicom(self, ds: Dataset) -> str:
        self.dicom = ds
        return "preview"

    def put_fhir(self, resources: list[dict[str, Any]]) -> list[str]:
        self.fhir.extend(resources)
        return [f"{r.get('resourceType')}/{r.get('id')}" for r in resources]


def destination_for(profile: Profile, linkage: Linkage) -> Destination:
    """A destination for previews alone (the CLI's): its stores keep nothing."""
    store = _KeepNothing()
    return Destination.build("preview", profile, linkage, store, store, eager_fhir=False)


def _runner(destination: Destination, store: _KeepNothing, seen: list[ProcessedInstance]) -> Runner:
    preview_destination = dataclasses.replace(destination, dicom_store=store, fhir_store=store)
    directory = RunDirectory(InMemoryPatientIndex(destination.linkage.identity))
    return Runner(preview_destination, directory, on_processed=seen.append)


def preview_dicom(destination: Destination, data: bytes, with_original: bool) -> Preview:
    """Run one DICOM Part 10 file; the header rows and frames of before and after."""
    store, seen = _KeepNothing(), list[ProcessedInstance]()
    with tempfile.TemporaryDirectory(prefix="deid-preview-") as folder:
        path = Path(folder) / "instance.dcm"  # large values are read from a file
        path.write_bytes(data)
        original = _read(path)
        outcome = _runner(destination, store, seen).run(
            Payload(PayloadKind.DICOM, "preview", path=path)
        )
        after = store.dicom if outcome.delivered else None
        preview = Preview("dicom", outcome, with_original)
        preview.rows = header_rows(original, after, with_original)  # values may be read late
        preview.processed = seen[-1] if seen else None
        if original is not None and after is not None:
            report = seen[-1].pixel_report if seen else None
            preview.frames, preview.frame_note = _frames(original, after, report, with_original)
    return preview


def preview_fhir(destination: Destination, data: bytes, with_original: bool) -> Preview:
    """Run one FHIR resource or Bundle; the JSON before and after, and their diff."""
    store, seen = _KeepNothing(), list[ProcessedInstance]()
    outcome = _runner(destination, store, seen).run(Payload(PayloadKind.FHIR, "preview", data=data))
    preview = Preview("fhir", outcome, with_original)
    if outcome.delivered:
        shown: Any = store.fhir[0] if len(store.fhir) == 1 else store.fhir
        preview.fhir_after = json.dumps(shown, indent=2, sort_keys=True, ensure_ascii=False)
    if with_original:
        try:
            preview.fhir_before = json.dumps(
                json.loads(data), indent=2, sort_keys=True, ensure_ascii=False
            )
        except ValueError:
            preview.fhir_before = None
    if preview.fhir_before is not None and preview.fhir_after is not None:
        preview.fhir_diff = list(
            difflib.unified_diff(
                preview.fhir_before.splitlines(),
                preview.fhir_after.splitlines(),
                "before",
                "after",
                lineterm="",
                n=2,
            )
        )
    return preview


def deidentified_header(destination: Destination, data: bytes) -> list[HeaderRow]:
    """The header as the profile leaves it, without the pixel stage and the release check:
    what a quarantine review shows of an instance that could not be made safe (never its
    original values)."""
    with tempfile.TemporaryDirectory(prefix="deid-preview-") as folder:
        path = Path(folder) / "instance.dcm"
        path.write_bytes(data)
        ds = _read(path)
        if ds is None:
            return []
        try:
            deidentifier = destination.dicom.deidentifier
            deidentifier.deidentify(ds, deidentifier.prepare(ds))
        except Exception:  # noqa: BLE001 - nothing de-identified, nothing shown
            return []
        return header_rows(None, ds, with_original=False)


def header_rows(
    before: Dataset | None, after: Dataset | None, with_original: bool
) -> list[HeaderRow]:
    old = flatten(before) if before is not None else {}
    new = flatten(after) if after is not None else {}
    rows = []
    for where in sorted(set(old) | set(new)):
        keyword, old_value = old.get(where, ("", None))
        new_keyword, new_value = new.get(where, ("", None))
        rows.append(
            HeaderRow(
                where,
                keyword or new_keyword,
                old_value if with_original else None,
                new_value,
                changed=old_value != new_value,
            )
        )
    return rows


def _read(path: Path) -> Dataset | None:
    try:
        return read_dicom(path)
    except DeidError:
        return None


def _frames(
    original: Dataset, after: Dataset, report: Any, with_original: bool
) -> tuple[list[FramePreview], str]:
    if not any(t in after for t in T.PIXEL_DATA_TAGS):
        return [], "no pixel data"
    try:
        from gateway.pixels.codec import decode
    except ImportError:
        return [], "pixel previews need numpy and Pillow"
    try:
        after_pixels = decode(copy.deepcopy(after))
        before_pixels = decode(copy.deepcopy(original)) if with_original else None
    except Exception as exc:  # noqa: BLE001 - a frame that does not decode is said, not raised
        return [], f"the frames could not be decoded ({type(exc).__name__})"
    count = after_pixels.count
    long_side = FRAME_LONG_SIDE[count > MANY_FRAMES]
    frames = []
    for index in range(count):
        outlines = _outlines(report, index)
        before_png = (
            _png(before_pixels.frames[index], before_pixels.photometric_out, original, long_side)
            if before_pixels is not None and index < before_pixels.count
            else None
        )
        after_png = _png(after_pixels.frames[index], after_pixels.photometric_out, after, long_side)
        height, width = after_pixels.frames.shape[1:3]
        frames.append(FramePreview(index, width, height, after_png, before_png, outlines))
    cleaned = "examined by the pixel stage" if report is not None else "not examined"
    return frames, f"{count} frame(s), {cleaned}"


def _outlines(report: Any, frame: int) -> tuple[Outline, ...]:
    if report is None:
        return ()
    out = [
        Outline(
            r.box.x0, r.box.y0, r.box.x1 - r.box.x0, r.box.y1 - r.box.y0, "redacted", r.source.value
        )
        for r in report.redactions
        if r.frames is None or frame in r.frames
    ]
    out.extend(
        Outline(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0, "kept", "profile") for b in report.kept
    )
    return tuple(dict.fromkeys(out))  # the same box found twice is outlined once


def _png(frame: Any, photometric: str, ds: Dataset, long_side: int) -> bytes:
    import numpy as np
    from PIL import Image

    from gateway.pixels.render import Palette, display_grey

    if frame.ndim == 3 and frame.dtype == np.uint8:
        image = Image.fromarray(frame, "RGB")
    else:
        image = Image.fromarray(display_grey(frame, photometric, Palette.from_dataset(ds)), "L")
    scale = long_side / max(image.size)
    if scale < 1:
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        )
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue()
