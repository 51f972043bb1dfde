"""A technician's corrections of a detector's result: delete a false detection, change a class, add a missed object.

An :class:`Edit` is one correction; a saved analysis keeps the detector's result unchanged and the list of edits, and
the corrected result is always ``apply_edits(detected, edits)``. Replay is deterministic (same result and edits ->
same corrected result, the same ids for added objects), so the original detector output stays recoverable, an edit
can be undone by replaying one fewer, and nothing depends on when the edits were made.

Edit kinds:

* ``delete``: the particle ``particle_id`` is removed (any particle, counted or excluded).
* ``set_class``: the particle ``particle_id`` becomes ``class_name`` ("crystal" or "agglomerate"); an excluded
  particle stays excluded (its exclusion reason is a separate judgement; delete it and draw a box to count it).
* ``add_box``: a missed object inside ``box`` = (x0, y0, x1, y1) in full-image pixels (x1/y1 exclusive) is
  measured and added as ``class_name``. Its mask comes from :func:`analysis.segment.refine_mask` on the cleaned
  image (the object the classical segmentation finds in the box, as for detector boxes); when no cleaned image is
  available, or the segment found covers less than :data:`MIN_SEGMENT_FILL` of the box (a speck, not the object
  the technician boxed), the ellipse inscribed in the box is used. The new particle is measured with
  :func:`analysis.measure.measure_particles`, gets confidence 1.0, is never excluded (the exclusion rules are the
  detector's; the technician's judgement overrides them) and a fresh id: one more than the largest id used so far
  in the replay (original ids and earlier added ones), so a deleted id is never reused. The result's ``detector``
  gets :data:`MANUAL_NOTE` appended while any added particle remains.

Errors are :class:`CorrectionError` (a :class:`~analysis.errors.CrystalQCError`) with a message a technician can
act on: an unknown particle id, a class that is already set, a box outside the image, inverted or smaller than
:data:`MIN_BOX_PX`, or a box around an object that is already counted.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from analysis.errors import CrystalQCError
from analysis.measure import measure_particles
from analysis.records import COUNTED_CLASSES, Detection, ImageResult, Particle
from analysis.segment import refine_mask
from detection.yolo import ellipse_in_box

EDIT_KINDS: tuple[str, ...] = ("delete", "set_class", "add_box")
#: Smallest side (px) of a drawn box.
MIN_BOX_PX = 3
#: A segment inside a drawn box must cover at least this fraction of the box's area, else the inscribed ellipse.
MIN_SEGMENT_FILL = 0.05
#: An added object whose box overlaps a counted particle's box by this IoU or more is refused as a duplicate.
DUPLICATE_IOU = 0.5
#: Appended to ``ImageResult.detector`` while the result holds objects added by hand.
MANUAL_NOTE = " + manual"
MAX_USER_CHARS = 128
#: Most edits one analysis may hold (a stored list longer than this is refused as damaged).
MAX_EDITS = 10_000
EDITS_SCHEMA = "crystal-qc/edits"
EDITS_VERSION = 1


class CorrectionError(CrystalQCError, ValueError):
    """A correction cannot be applied (unknown particle, bad box, ...) or a stored edit list is malformed."""


def now_iso() -> str:
    """The current UTC time, ISO-8601 with seconds (the ``time`` of a new edit)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Edit:
    """One correction. ``box`` is (x0, y0, x1, y1) in full-image pixels, x1/y1 exclusive (add_box only);
    ``particle_id`` names the particle (delete, set_class) or, for add_box, the id it was given (None before it is
    applied); ``user`` made it at ``time`` (UTC ISO-8601). Field shapes are checked here; whether the edit fits a
    result (id exists, box inside the image) is checked by :func:`apply_edits`.

    Raises:
        CorrectionError: unknown kind, missing or superfluous field for the kind, wrong types.
    """

    kind: str
    particle_id: int | None = None
    class_name: str | None = None
    box: tuple[int, int, int, int] | None = None
    user: str = ""
    time: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EDIT_KINDS:
            raise CorrectionError(f"Unknown correction {self.kind!r}; use one of {', '.join(EDIT_KINDS)}.")
        pid = self.particle_id
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid < 1):
            raise CorrectionError(f"A particle id is a whole number from 1, got {pid!r}.")
        if self.kind in ("delete", "set_class") and pid is None:
            raise CorrectionError(f"A {self.kind} correction needs the particle id.")
        if self.kind == "delete" and self.class_name is not None:
            raise CorrectionError("A delete correction takes no class.")
        if self.kind in ("set_class", "add_box") and self.class_name not in COUNTED_CLASSES:
            raise CorrectionError(f"The class must be one of {', '.join(COUNTED_CLASSES)}, got {self.class_name!r}.")
        if self.kind == "add_box":
            box = self.box
            if (not isinstance(box, tuple) or len(box) != 4
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)):
                raise CorrectionError(f"A box is four whole pixel numbers (x0, y0, x1, y1), got {box!r}.")
        elif self.box is not None:
            raise CorrectionError(f"A {self.kind} correction takes no box.")
        if not isinstance(self.user, str) or len(self.user) > MAX_USER_CHARS or not self.user.isprintable():
            raise CorrectionError(f"The user of a correction is printable text of at most {MAX_USER_CHARS}"
                                  " characters.")
        if not isinstance(self.time, str) or (self.time and not _is_iso_time(self.time)):
            raise CorrectionError(f"The time of a correction must be an ISO-8601 time, got {self.time!r}.")

    def to_dict(self) -> dict:
        """JSON-ready dict (box as a list)."""
        return {"kind": self.kind, "particle_id": self.particle_id, "class_name": self.class_name,
                "box": None if self.box is None else list(self.box), "user": self.user, "time": self.time}

    @classmethod
    def from_dict(cls, doc: object) -> Edit:
        """The edit of :meth:`to_dict`. Raises CorrectionError for anything else."""
        fields = {"kind", "particle_id", "class_name", "box", "user", "time"}
        if not isinstance(doc, dict) or set(doc) != fields:
            raise CorrectionError("A stored correction has missing or unknown fields; the edit list is damaged.")
        box = doc["box"]
        return cls(kind=doc["kind"], particle_id=doc["particle_id"], class_name=doc["class_name"],
                   box=tuple(box) if isinstance(box, list) else box, user=doc["user"], time=doc["time"])


def _is_iso_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return len(text) <= 40


def edits_to_json(edits: Sequence[Edit]) -> bytes:
    """UTF-8 JSON of an edit list: {"schema", "version", "edits": [Edit.to_dict(), ...]}."""
    doc = {"schema": EDITS_SCHEMA, "version": EDITS_VERSION, "edits": [e.to_dict() for e in edits]}
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def edits_from_json(data: bytes) -> tuple[Edit, ...]:
    """The edit list of :func:`edits_to_json` bytes.

    Raises:
        CorrectionError: not JSON, another schema or version, more than MAX_EDITS edits, a malformed edit.
    """
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CorrectionError("The stored edit list is not valid JSON; it is damaged.") from e
    if not isinstance(doc, dict) or doc.get("schema") != EDITS_SCHEMA or set(doc) != {"schema", "version", "edits"}:
        raise CorrectionError("The stored edit list is not a crystal QC edit list.")
    if doc["version"] != EDITS_VERSION:
        raise CorrectionError(f"The stored edit list has format version {doc['version']!r}; this app reads version"
                              f" {EDITS_VERSION}. Update the app to open it.")
    if not isinstance(doc["edits"], list) or len(doc["edits"]) > MAX_EDITS:
        raise CorrectionError(f"The stored edit list must be a list of at most {MAX_EDITS} edits.")
    return tuple(Edit.from_dict(e) for e in doc["edits"])


@dataclass(frozen=True, eq=False)
class Replay:
    """What :func:`replay_edits` produced: the corrected ``result``; ``edits`` as applied (add_box edits carry the
    id their particle got); ``manual_ids``: ids of the particles added by hand that are still in the result."""

    result: ImageResult
    edits: tuple[Edit, ...]
    manual_ids: frozenset[int]


def apply_edits(result: ImageResult, edits: Iterable[Edit], *, cleaned: np.ndarray | None = None) -> ImageResult:
    """The corrected copy of ``result`` after ``edits`` in order (see the module doc); the input is not modified.

    cleaned: float32 (H, W) cleaned image used to segment added boxes; None = ``result.cleaned`` (and when that is
    None too, added objects are the ellipses inscribed in their boxes).

    Raises:
        CorrectionError: an edit does not fit (unknown or deleted particle, class already set, box outside the image,
        inverted or too small, a duplicate of a counted particle, an id already in use), or ``cleaned`` does not have
        the image's size.
    """
    return replay_edits(result, edits, cleaned=cleaned).result


def replay_edits(result: ImageResult, edits: Iterable[Edit], *, cleaned: np.ndarray | None = None) -> Replay:
    """:func:`apply_edits` that also returns the applied edits (ids of added objects filled in) and the ids of the
    objects added by hand. Raises as :func:`apply_edits`."""
    width, height = int(result.meta.width), int(result.meta.height)
    image = result.cleaned if cleaned is None else cleaned
    if image is not None:
        image = np.asarray(image, dtype=np.float32)
        if image.shape != (height, width):
            raise CorrectionError(f"The cleaned image is {image.shape[1]} x {image.shape[0]} px but the analysis is"
                                  f" {width} x {height} px.")
    particles: dict[int, Particle] = {p.particle_id: p for p in result.particles}
    used = set(particles)
    manual: set[int] = set()
    applied: list[Edit] = []
    for edit in edits:
        if not isinstance(edit, Edit):
            raise CorrectionError(f"Expected an Edit, got {type(edit).__name__}.")
        if edit.kind == "delete":
            _existing(particles, edit.particle_id)
            del particles[edit.particle_id]
            manual.discard(edit.particle_id)
        elif edit.kind == "set_class":
            old = _existing(particles, edit.particle_id)
            if old.class_name == edit.class_name:
                raise CorrectionError(f"Particle {old.particle_id} is already a {old.class_name}.")
            particles[old.particle_id] = dataclasses.replace(old, class_name=edit.class_name)
        else:
            pid = max(used, default=0) + 1 if edit.particle_id is None else edit.particle_id
            if pid in used:
                raise CorrectionError(f"Particle id {pid} is already in use; the edit list is inconsistent.")
            new = measure_box(image, edit.box, class_name=edit.class_name, particle_id=pid, width=width,
                              height=height)
            twin = _duplicate_of(new, particles.values())
            if twin is not None:
                raise CorrectionError(f"The box covers particle {twin.particle_id}, which is already counted as a"
                                      f" {twin.class_name}: change its class or delete it instead of adding it.")
            particles[pid] = new
            used.add(pid)
            manual.add(pid)
            edit = dataclasses.replace(edit, particle_id=pid)
        applied.append(edit)
    detector = result.detector + (MANUAL_NOTE if manual and not result.detector.endswith(MANUAL_NOTE) else "")
    corrected = dataclasses.replace(result, particles=tuple(particles.values()), detector=detector)
    return Replay(result=corrected, edits=tuple(applied), manual_ids=frozenset(manual))


def _existing(particles: dict[int, Particle], pid: int | None) -> Particle:
    if pid not in particles:
        raise CorrectionError(f"Particle {pid} is not in this analysis (check the id in the particle table; it may"
                              " have been deleted already).")
    return particles[pid]


def check_box(box: Sequence[int], *, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` as (x0, y0, x1, y1) if it is a proper box inside a ``width`` x ``height`` image.

    Raises:
        CorrectionError: inverted (x1 <= x0 or y1 <= y0), a side under MIN_BOX_PX, or not inside the image.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise CorrectionError(f"The box ({x0}, {y0}, {x1}, {y1}) is inverted: its right/bottom edge must lie beyond"
                              " its left/top edge.")
    if x1 - x0 < MIN_BOX_PX or y1 - y0 < MIN_BOX_PX:
        raise CorrectionError(f"The box is {x1 - x0} x {y1 - y0} px; draw at least {MIN_BOX_PX} x {MIN_BOX_PX} px"
                              " around the object.")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise CorrectionError(f"The box ({x0}, {y0}, {x1}, {y1}) reaches outside the {width} x {height} px image.")
    return x0, y0, x1, y1


def measure_box(image: np.ndarray | None, box: Sequence[int], *, class_name: str, particle_id: int, width: int,
                height: int) -> Particle:
    """Measure the object inside ``box`` (see the module doc for how its mask is found) as a counted particle.

    image: cleaned float32 (height, width) image, or None (inscribed ellipse). Returns a Particle with
    ``particle_id``, ``class_name``, confidence 1.0 and no exclusion reason.

    Raises:
        CorrectionError: the box fails :func:`check_box`, or the image cannot be segmented.
    """
    x0, y0, x1, y1 = check_box(box, width=width, height=height)
    mask = None
    if image is not None:
        try:
            sx0, sy0, sx1, sy1, seg = refine_mask(image, (x0, y0, x1, y1))
        except ValueError as e:
            raise CorrectionError(f"The box ({x0}, {y0}, {x1}, {y1}) cannot be segmented: {e}") from e
        if np.count_nonzero(seg) >= MIN_SEGMENT_FILL * (x1 - x0) * (y1 - y0):
            mask, (x0, y0, x1, y1) = seg, (sx0, sy0, sx1, sy1)
    if mask is None:
        mask = ellipse_in_box(x1 - x0, y1 - y0)
    measure_on = image if image is not None else np.zeros((height, width), np.float32)
    det = Detection(x0, y0, x1, y1, mask, class_name=class_name, confidence=1.0, excluded_reason=None)
    [particle] = measure_particles(measure_on, [det])
    return dataclasses.replace(particle, particle_id=particle_id)


def _iou(a: Particle, b: Particle) -> float:
    ix = max(0, min(a.x_max, b.x_max) - max(a.x_min, b.x_min))
    iy = max(0, min(a.y_max, b.y_max) - max(a.y_min, b.y_min))
    inter = ix * iy
    union = ((a.x_max - a.x_min) * (a.y_max - a.y_min) + (b.x_max - b.x_min) * (b.y_max - b.y_min) - inter)
    return inter / union if union > 0 else 0.0


def _duplicate_of(new: Particle, particles: Iterable[Particle]) -> Particle | None:
    """The counted (not excluded) particle whose box overlaps ``new``'s by DUPLICATE_IOU or more, if any."""
    best, best_iou = None, 0.0
    for p in particles:
        if p.excluded_reason is None:
            iou = _iou(new, p)
            if iou >= DUPLICATE_IOU and iou > best_iou:
                best, best_iou = p, iou
    return best


__all__ = ["EDIT_KINDS", "MIN_BOX_PX", "MIN_SEGMENT_FILL", "DUPLICATE_IOU", "MANUAL_NOTE", "CorrectionError", "Edit",
           "Replay", "apply_edits", "replay_edits", "check_box", "measure_box", "edits_to_json",
           "edits_from_json", "now_iso"]
