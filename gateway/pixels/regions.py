"""Known regions: boxes redacted whatever OCR reads.

* the ``deid`` package's pixel filters (its ``dicom`` recipe: CTP-style vendor/model signatures
  with coordinates, and ``keepcoordinates`` that mask everything outside a region);
* for ultrasound, everything outside SequenceOfUltrasoundRegions, when the profile asks;
* the profile's own device rules (``dicom.pixels.regions``)::

      - match: {Manufacturer: SIEMENS, ManufacturerModelName: S2000, Rows: 768}
        boxes: [[0, 0, 1024, 60]]       # x0, y0, x1, y1 (half-open)
        keep: [[0, 60, 1024, 768]]      # optional: everything outside is redacted
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pydicom
from pydantic import ValidationError

from gateway.errors import ConfigurationError, ReasonCode
from gateway.pixels.model import Box, BoxSource
from gateway.profiles.model import PixelRegion

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownRegions:
    """Boxes to redact, and boxes outside of which everything is redacted."""

    redact: tuple[tuple[Box, BoxSource], ...] = ()
    keep: tuple[tuple[Box, BoxSource], ...] = ()

    def __add__(self, other: KnownRegions) -> KnownRegions:
        return KnownRegions(self.redact + other.redact, self.keep + other.keep)

    @property
    def empty(self) -> bool:
        return not self.redact and not self.keep


@dataclass(frozen=True)
class ProfileRegion:
    match: tuple[tuple[str, str], ...]
    boxes: tuple[Box, ...]
    keep: tuple[Box, ...]

    @staticmethod
    def from_model(region: PixelRegion) -> ProfileRegion:
        """From the profile's validated rule (the compiler's path: no check here)."""
        return ProfileRegion(
            match=tuple(sorted((str(k), str(v)) for k, v in region.match.items())),
            boxes=tuple(Box(*b) for b in region.boxes),
            keep=tuple(Box(*b) for b in region.keep),
        )

    @staticmethod
    def parse(raw: dict[str, Any]) -> ProfileRegion:
        """From a plain mapping (callers outside a profile), checked by the profile's model."""
        try:
            region = PixelRegion.model_validate(raw)
        except ValidationError:
            raise ConfigurationError(
                ReasonCode.PROFILE_INVALID,
                "pixel region: keys are match, boxes, keep, why; boxes [x0, y0, x1, y1], "
                "x1 > x0, y1 > y0",
            ) from None
        return ProfileRegion.from_model(region)

    def applies(self, ds: pydicom.Dataset) -> bool:
        for keyword, wanted in self.match:
            value = ds.get(keyword)
            if value is None:
                return False
            if isinstance(value, (int, float)):
                if str(value) != wanted:
                    return False
            elif wanted.upper() not in str(value).upper():
                return False
        return True


class RegionRules:
    """Built once per process from the profile."""

    def __init__(
        self,
        profile_regions: Sequence[ProfileRegion | PixelRegion | dict[str, Any]],
        *,
        deid_filters: bool = True,
        ultrasound_outside_regions: bool = False,
    ) -> None:
        self.profile_regions = tuple(_region(r) for r in profile_regions)
        self.ultrasound_outside_regions = ultrasound_outside_regions
        self._recipe: Any = None
        self._local = threading.local()
        if deid_filters:
            from deid.config import DeidRecipe

            with _quiet_deid():
                self._recipe = DeidRecipe("dicom")

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (a worker pool may ship the stage): per-thread recipe copies stay behind."""
        state = dict(self.__dict__)
        del state["_local"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def regions(self, ds: pydicom.Dataset) -> KnownRegions:
        found = KnownRegions()
        for rule in self.profile_regions:
            if rule.applies(ds):
                found += KnownRegions(
                    tuple((b, BoxSource.PROFILE_REGION) for b in rule.boxes),
                    tuple((b, BoxSource.PROFILE_REGION) for b in rule.keep),
                )
        if self.ultrasound_outside_regions:
            found += KnownRegions(
                keep=tuple((b, BoxSource.ULTRASOUND_REGIONS) for b in ultrasound_regions(ds))
            )
        if self._recipe is not None:
            found += self._deid_regions(ds)
        return found

    def _deid_regions(self, ds: pydicom.Dataset) -> KnownRegions:
        from deid.dicom.pixels.detect import has_burned_pixels

        recipe = self._thread_recipe()
        try:
            try:
                with _quiet_deid():
                    result = has_burned_pixels(ds, deid=recipe.recipe)
            except Exception as exc:  # noqa: BLE001 - deid could not evaluate this header: OCR still runs
                LOG.warning("deid pixel filters failed: %s", type(exc).__name__)
                return KnownRegions()
            return self._known_regions(ds, result)  # before the restore: it reads resolved values
        finally:
            recipe.restore()

    def _thread_recipe(self) -> _RecipeCopy:
        """deid writes the coordinates it resolves from a header ("from:" fields) into the
        recipe: each thread gets its own copy, made once and put back after every call
        (a deep copy per instance cost 19 ms)."""
        copy_ = getattr(self._local, "recipe", None)
        if copy_ is None:
            copy_ = self._local.recipe = _RecipeCopy(self._recipe)
        return copy_

    @staticmethod
    def _known_regions(ds: pydicom.Dataset, result: dict[str, Any]) -> KnownRegions:
        redact: list[tuple[Box, BoxSource]] = []
        keep: list[tuple[Box, BoxSource]] = []
        columns, rows = int(ds.get("Columns", 0)), int(ds.get("Rows", 0))
        for item in result.get("results", []):
            if item.get("group") == "whitelist":
                continue  # "BurnedInAnnotation NO" is not trusted
            for kind, value in item.get("coordinates", []):
                values = value if isinstance(value, list) else [value]
                for text in values:
                    box = _deid_box(str(text), columns, rows)
                    if box is not None:
                        (keep if int(kind) == 1 else redact).append((box, BoxSource.DEID_FILTER))
        return KnownRegions(tuple(redact), tuple(keep))


def _region(region: ProfileRegion | PixelRegion | dict[str, Any]) -> ProfileRegion:
    if isinstance(region, ProfileRegion):
        return region
    if isinstance(region, PixelRegion):
        return ProfileRegion.from_model(region)
    return ProfileRegion.parse(region)


class _RecipeCopy:
    """A private deep copy of a deid recipe, and how to undo what deid writes into it."""

    def __init__(self, recipe: Any) -> None:
        self.recipe = copy.deepcopy(recipe)
        self._resolved: list[tuple[list[Any], Any]] = [
            (coordset, coordset[1])
            for items in (self.recipe.get_filters() or {}).values()
            for item in items
            for coordset in item.get("coordinates", [])
            if "from:" in str(coordset[1])
        ]

    def restore(self) -> None:
        for coordset, original in self._resolved:
            coordset[1] = original


@contextmanager
def _quiet_deid() -> Iterator[None]:
    """deid prints at DEBUG level to stderr (header values included): silence it while we call."""
    from deid.logger import bot

    level = bot.level
    bot.level = -3  # deid's ERROR
    try:
        yield
    finally:
        bot.level = level


def _deid_box(text: str, columns: int, rows: int) -> Box | None:
    if text.strip().lower() == "all":
        return Box(0, 0, columns, rows)
    try:
        x0, y0, x1, y1 = (int(float(v)) for v in text.split(","))
    except ValueError:
        return None
    return Box(x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def ultrasound_regions(ds: pydicom.Dataset) -> list[Box]:
    """SequenceOfUltrasoundRegions as boxes (the Max coordinates are inclusive in DICOM)."""
    boxes: list[Box] = []
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        try:
            boxes.append(
                Box(
                    int(region.RegionLocationMinX0),
                    int(region.RegionLocationMinY0),
                    int(region.RegionLocationMaxX1) + 1,
                    int(region.RegionLocationMaxY1) + 1,
                )
            )
        except (AttributeError, TypeError, ValueError):
            continue
    return boxes
