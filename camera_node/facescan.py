"""Finding faces of every size on one frame, within a time budget, without trusting stale results.

A whole-frame pass at ``detect_width`` (the *coarse* pass) finds faces larger than ~3 % of the
frame width on every frame. Smaller faces (down to ~10 px at native resolution, which YuNet at
native resolution finds and which stay readable in a 1080p JPEG) need the detector at native
resolution, and one native 1080p pass costs ~100 ms on one core: too slow for every frame.

So the frame is divided into cells (~192 px) and the *fine* pass runs YuNet at native
resolution over runs of cells, as many as the frame's time budget allows (frames no wider
than ``detect_width`` need none: their coarse pass already runs at native resolution or
above). A cell's fine result stays valid only while the cell's content has not
changed since it was scanned, measured on a grey thumbnail against the thumbnail taken when
it was scanned (slow drift adds up; a scene cut changes every cell). A cell that changed, or
was never scanned, and could not be scanned on this frame is returned as *uncertain*: the zone
finder covers it whole. So a frame never goes out with small-face zones from an older,
different picture: a cut, a pan or someone stepping in costs over-redaction of the cells not
yet rescanned, never a readable face. Cells are chosen by how long they have waited; unchanged
cells are rescanned every ``REFRESH_S`` when budget is left over.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np
from veilcam.camera_node.detect import Box, FaceDetector, YuNetDetector, create_face_detector
from veilcam.camera_node.zones import iou_matrix
from veilcam.common.config import FacesSection

CELL_PX = 192  # cell side in pixels (at most)
OVERLAP_PX = 32  # each fine window reaches this far into its neighbours (faces on borders)
THUMB_PER_CELL = 48  # thumbnail pixels per cell side (~4 px each)
CHANGE_LEVEL = 18  # grey levels (0-255) a thumbnail pixel must move to count as changed
CHANGE_PIXELS = 3  # changed thumbnail pixels that make a cell changed (~7x7 px at 1080p)
WINDOW_OVERHEAD = 1.35  # merged windows with their overlap cost about this much more than cells
REGION_PAD_PX = 16  # an uncertain cell's changed region is covered this much wider
REFRESH_S = 3.0  # rescan unchanged cells at least this often when budget is left
PAN_MIN_SHIFT = 0.75  # thumbnail pixels per frame from which the picture counts as moving
PAN_TRUST_S = 0.2  # while panning, a cell's last scan stands for this long, then it is redone
PAN_MIN_RESPONSE = 0.2  # phase-correlation peak below which there is no one global shift
UNKNOWN = -1000  # thumbnail value of picture that entered the frame since the last scan
EDGE_HOLD_FRAMES = 8  # motion that came in at the border stays covered this long after it
# was last seen moving, unless the detector found a face in it
EDGE_MAX_SHARE = 0.4  # motion over more of the frame is a cut (covered whole) or a pan
EDGE_BAND_FACES = 2.0  # a border region with a face found in it stays covered this deep
# along the border it touches, in sizes of the largest face found in it


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int


Contact = tuple[str, int, int]  # a stretch of the frame's border: side, first and last pixel


class TileDetector(Protocol):
    """Runs a face detector on an image at its own resolution (no resizing): YuNetDetector."""

    def detect_native(self, image: np.ndarray) -> list[Box]: ...


@dataclass
class ScanResult:
    boxes: list[Box]  # faces on this frame (coarse + valid fine), frame pixels
    uncertain: list[Rect]  # regions whose small faces are unknown: cover them whole
    entering: list[Rect] = field(default_factory=list)  # motion from the border, no face seen
    # no previous frame at this size (a start, a new frame size, the first frame after the
    # source was lost), or a scene cut (most of the picture changed and it is no pan): motion
    # from the border cannot be seen, so the frame is covered whole
    blind: bool = False
    cells_scanned: int = 0
    cells_uncertain: int = 0
    cells_total: int = 0
    coarse_ms: float = 0.0
    fine_ms: float = 0.0


@dataclass
class _Grid:
    """Cells of one frame size: equal divisions of the frame, CELL_PX pixels or less."""

    width: int
    height: int
    cols: int
    rows: int
    xs: list[int]  # cell boundaries in frame pixels, cols + 1 of them
    ys: list[int]

    @classmethod
    def for_size(cls, width: int, height: int) -> _Grid:
        cols = max(1, math.ceil(width / CELL_PX))
        rows = max(1, math.ceil(height / CELL_PX))
        xs = [round(i * width / cols) for i in range(cols + 1)]
        ys = [round(j * height / rows) for j in range(rows + 1)]
        return cls(width, height, cols, rows, xs, ys)

    def cell_rect(self, row: int, col: int) -> Rect:
        return Rect(
            self.xs[col],
            self.ys[row],
            self.xs[col + 1] - self.xs[col],
            self.ys[row + 1] - self.ys[row],
        )

    def cell_of(self, x: float, y: float) -> tuple[int, int]:
        col = min(self.cols - 1, max(0, int(x * self.cols / self.width)))
        row = min(self.rows - 1, max(0, int(y * self.rows / self.height)))
        return row, col


@dataclass
class _CellState:
    scanned_at: float = -math.inf  # clock time of the last fine scan
    boxes: list[Box] = field(default_factory=list)  # its fine detections, frame pixels


class FaceScanner:
    """Coarse pass on every frame plus budgeted fine passes over cells (see the module doc).

    ``fine`` None: coarse pass only (a detector that cannot run on tiles, e.g. Haar, or a
    test double); nothing is then ever uncertain."""

    def __init__(
        self, coarse: FaceDetector, fine: TileDetector | None = None, clock=time.monotonic
    ) -> None:
        self.coarse = coarse
        self.fine = fine
        self.clock = clock
        self._grid: _Grid | None = None
        self._cells: list[list[_CellState]] = []
        self._ref_thumb: np.ndarray | None = None  # thumbnail as each cell was last scanned
        self._edges = _EdgeGuard()
        self._prev_thumb: np.ndarray | None = None
        self._moved: np.ndarray | None = None  # thumbnail pixels changed since their scan
        self._pan = [0.0, 0.0]  # sub-pixel part of the picture's shift not yet applied
        self._hann: np.ndarray | None = None
        self.pan_frames = 0  # frames on which a pan (global shift) was followed
        self._us_per_kpx = 100.0  # running cost of the fine pass, to plan within the budget

    def reset(self) -> None:
        """Forget every fine result (the next frames' cells are all uncertain until scanned)."""
        self._grid = None

    def discontinuity(self) -> None:
        """The next frame does not follow the last one (the source was lost and came back):
        motion at the border cannot be measured against it, so that frame comes out blind
        (covered whole) while the scanner takes it as its new reference."""
        self._edges.forget_previous()

    def _thumb(self, image: np.ndarray, grid: _Grid) -> np.ndarray:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        size = (grid.cols * THUMB_PER_CELL, grid.rows * THUMB_PER_CELL)
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.int16)

    def scan(
        self, image: np.ndarray, fine_budget_s: float, coarse_image: np.ndarray | None = None
    ) -> ScanResult:
        """Faces of ``image`` and the regions still uncertain after ``fine_budget_s`` seconds of
        fine passes (0: none, every changed cell stays uncertain). ``coarse_image``: the same
        picture at a lower resolution (the camera's sub-stream), for the coarse pass only;
        the fine passes, the change map and the edge check always work on ``image``."""
        height, width = image.shape[:2]
        t0 = time.perf_counter()
        if coarse_image is None:
            boxes = list(self.coarse.detect(image))
        else:
            sx, sy = width / coarse_image.shape[1], height / coarse_image.shape[0]
            boxes = [
                Box(b.x * sx, b.y * sy, b.w * sx, b.h * sy, b.score)
                for b in self.coarse.detect(coarse_image)
            ]
        if self.fine is None:
            return ScanResult(boxes, [], coarse_ms=(time.perf_counter() - t0) * 1000)
        seen_width = width if coarse_image is None else min(width, coarse_image.shape[1])
        detect_width = getattr(self.coarse, "detect_width", 0)
        whole = seen_width == width and width <= detect_width
        if whole and width < detect_width:
            # the coarse pass enlarged this frame, and YuNet on an enlarged picture misses
            # some faces it finds at the frame's own size (a 14x18 px face at 320x180): one
            # more pass at native resolution, a quarter of the enlarged pass's pixels at 2x
            boxes.extend(self.fine.detect_native(image))
        coarse_ms = (time.perf_counter() - t0) * 1000
        grid = self._grid
        if grid is None or (grid.width, grid.height) != (width, height):
            grid = self._grid = _Grid.for_size(width, height)
            self._cells = [[_CellState() for _ in range(grid.cols)] for _ in range(grid.rows)]
            self._ref_thumb = None
            self._prev_thumb = None
        now = self.clock()
        thumb = self._thumb(image, grid)
        panned = self._follow_pan(thumb, grid)
        if whole:
            # the whole-frame passes ran at native resolution (or above): they found every
            # face a cell pass would, on this very frame
            changed = np.zeros((grid.rows, grid.cols), bool)
            self._ref_thumb = thumb
        else:
            changed = self._changed_cells(thumb, grid, tolerant=panned)
            if panned:
                # what the pan carried along the border was scanned where it stood, and a face
                # cut by the edge scores by where the cut falls (bench/leaks.py pan720: a face
                # missed one frame before, readable the next): the border cells are rescanned
                # or covered while the picture moves. Inside, a scan's "no face" holds for the
                # pixels it saw: moved and resampled, a small face can score over the threshold
                # (a 9x11 px face read live on pan720): a cell not scanned for PAN_TRUST_S is
                # rescanned or covered too
                changed[[0, -1], :] = True
                changed[:, [0, -1]] = True
                for r, row in enumerate(self._cells):
                    for c, cell in enumerate(row):
                        if now - cell.scanned_at > PAN_TRUST_S:
                            changed[r, c] = True
        chosen = set() if whole else self._choose(changed, grid, fine_budget_s, now)
        t1 = time.perf_counter()
        scanned, transient = self._run_fine(image, grid, chosen, thumb, now, fine_budget_s)
        fine_ms = (time.perf_counter() - t1) * 1000
        uncertain_cells = [
            (r, c)
            for r in range(grid.rows)
            for c in range(grid.cols)
            if changed[r, c] and (r, c) not in scanned
        ]
        for row in self._cells:
            for cell in row:
                boxes.extend(cell.boxes)
        boxes.extend(transient)
        boxes = _dedupe(boxes)
        blind = not self._edges.has_history(thumb, grid)
        entering = self._edges.update(thumb, grid, boxes)
        # a cut hides what enters at the border (the edge check cannot tell it from the rest):
        # the frame is covered whole. A followed pan is left to the cells, except where no
        # cell is ever rescanned (``whole``): there the picture entering is covered that way
        blind = blind or (self._edges.cut and (whole or not panned))
        return ScanResult(
            boxes,
            self._uncertain_regions(uncertain_cells, grid),
            entering,
            blind=blind,
            cells_scanned=len(scanned),
            cells_uncertain=len(uncertain_cells),
            cells_total=grid.rows * grid.cols,
            coarse_ms=coarse_ms,
            fine_ms=fine_ms,
        )

    def _follow_pan(self, thumb: np.ndarray, grid: _Grid) -> bool:
        """When the whole picture moved (a pan, a camera knocked), move what was scanned with
        it: the reference thumbnails and the faces found, so cells whose content only moved
        are not rescanned; the picture that entered at the border is unknown. True if it
        moved this frame."""
        prev, self._prev_thumb = self._prev_thumb, thumb
        if prev is None or prev.shape != thumb.shape or self._ref_thumb is None:
            return False
        if self._hann is None or self._hann.shape != thumb.shape:
            self._hann = cv2.createHanningWindow((thumb.shape[1], thumb.shape[0]), cv2.CV_32F)
        (dx, dy), response = cv2.phaseCorrelate(
            prev.astype(np.float32), thumb.astype(np.float32), self._hann
        )
        h, w = thumb.shape
        if (
            response < PAN_MIN_RESPONSE
            or max(abs(dx), abs(dy)) < PAN_MIN_SHIFT
            or abs(dx) > w / 3
            or abs(dy) > h / 3
            or not _shift_explains(prev, thumb, round(dx), round(dy))
        ):
            self._pan = [0.0, 0.0]
            return False
        self._pan[0] += dx
        self._pan[1] += dy
        ix, iy = round(self._pan[0]), round(self._pan[1])
        self._pan[0] -= ix
        self._pan[1] -= iy
        self.pan_frames += 1
        if ix == 0 and iy == 0:
            return True
        ref = np.full_like(self._ref_thumb, UNKNOWN)
        ref[max(0, iy) : h + min(0, iy), max(0, ix) : w + min(0, ix)] = self._ref_thumb[
            max(0, -iy) : h - max(0, iy), max(0, -ix) : w - max(0, ix)
        ]
        self._ref_thumb = ref
        sx, sy = ix * grid.width / w, iy * grid.height / h
        moved = [
            Box(b.x + sx, b.y + sy, b.w, b.h, b.score)
            for row in self._cells
            for cell in row
            for b in cell.boxes
        ]
        for row in self._cells:
            for cell in row:
                cell.boxes = []
        for box in moved:
            cx, cy = box.x + box.w / 2, box.y + box.h / 2
            if 0 <= cx < grid.width and 0 <= cy < grid.height:
                r, c = grid.cell_of(cx, cy)
                self._cells[r][c].boxes.append(box)
        return True

    def _changed_cells(self, thumb: np.ndarray, grid: _Grid, tolerant: bool = False) -> np.ndarray:
        """Cells whose content moved since their last scan (all of them without a reference).
        ``tolerant`` (the picture was just shifted by whole thumbnail pixels): a pixel counts
        only if it lies outside its reference neighbourhood's range, so the sub-pixel rest of
        the shift does not mark every edge as changed."""
        if self._ref_thumb is None:
            self._ref_thumb = np.full_like(thumb, UNKNOWN)
            self._moved = None
            return np.ones((grid.rows, grid.cols), bool)
        if tolerant:
            ring = np.ones((3, 3), np.uint8)
            moved = (thumb > cv2.dilate(self._ref_thumb, ring) + CHANGE_LEVEL) | (
                thumb < cv2.erode(self._ref_thumb, ring) - CHANGE_LEVEL
            )
        else:
            moved = np.abs(thumb - self._ref_thumb) > CHANGE_LEVEL
        # specks of codec noise are not a face appearing: a 2x2 opening keeps ~8 px and up
        moved = cv2.morphologyEx(
            moved.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)
        ).astype(bool)
        self._moved = moved
        counts = moved.reshape(grid.rows, THUMB_PER_CELL, grid.cols, THUMB_PER_CELL).sum((1, 3))
        never = np.array([[math.isinf(cell.scanned_at) for cell in row] for row in self._cells])
        return (counts >= CHANGE_PIXELS) | never

    def _uncertain_regions(self, cells: list[tuple[int, int]], grid: _Grid) -> list[Rect]:
        """What to cover for cells that changed and were not rescanned: per run of such
        cells in a row, the box around the thumbnail pixels that changed, grown by
        REGION_PAD_PX (a face new since the last scan is new content: it lies where the
        picture changed; the rest of the cell still holds what the last scan saw). A cell
        never scanned is covered whole."""
        rects: list[Rect] = []
        t = THUMB_PER_CELL
        sx, sy = grid.width / (grid.cols * t), grid.height / (grid.rows * t)
        for row, col in sorted(cells):
            cell = grid.cell_rect(row, col)
            if self._moved is None or math.isinf(self._cells[row][col].scanned_at):
                rects.append(cell)
                continue
            ys, xs = np.nonzero(self._moved[row * t : (row + 1) * t, col * t : (col + 1) * t])
            if not xs.size:
                continue
            x0 = max(0, int((col * t + xs.min()) * sx) - REGION_PAD_PX)
            y0 = max(0, int((row * t + ys.min()) * sy) - REGION_PAD_PX)
            x1 = min(grid.width, math.ceil((col * t + xs.max() + 1) * sx) + REGION_PAD_PX)
            y1 = min(grid.height, math.ceil((row * t + ys.max() + 1) * sy) + REGION_PAD_PX)
            rects.append(Rect(x0, y0, x1 - x0, y1 - y0))
        return rects

    def _choose(
        self, changed: np.ndarray, grid: _Grid, budget_s: float, now: float
    ) -> set[tuple[int, int]]:
        """Changed cells first, longest-waiting first; then unchanged ones due a refresh."""

        def waited(rc: tuple[int, int]) -> float:
            return now - self._cells[rc[0]][rc[1]].scanned_at

        cells = [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
        urgent = sorted((rc for rc in cells if changed[rc]), key=waited, reverse=True)
        due = sorted(
            (rc for rc in cells if not changed[rc] and waited(rc) >= REFRESH_S),
            key=waited,
            reverse=True,
        )
        chosen: set[tuple[int, int]] = set()
        spent_s = 0.0
        for rc in urgent + due:
            cell = grid.cell_rect(*rc)
            kpx = cell.w * cell.h / 1000 * WINDOW_OVERHEAD
            cost_s = kpx * self._us_per_kpx / 1e6
            if spent_s + cost_s > budget_s:
                break
            chosen.add(rc)
            spent_s += cost_s
        return chosen

    @staticmethod
    def _window(grid: _Grid, rect: Rect) -> Rect:
        pad = OVERLAP_PX
        x0, y0 = max(0, int(rect.x - pad)), max(0, int(rect.y - pad))
        x1 = min(grid.width, int(math.ceil(rect.x + rect.w + pad)))
        y1 = min(grid.height, int(math.ceil(rect.y + rect.h + pad)))
        return Rect(x0, y0, x1 - x0, y1 - y0)

    def _run_fine(
        self,
        image: np.ndarray,
        grid: _Grid,
        chosen: set[tuple[int, int]],
        thumb: np.ndarray,
        now: float,
        budget_s: float,
    ) -> tuple[set[tuple[int, int]], list[Box]]:
        """Fine-scan the chosen cells, a run of adjacent cells of one row per window, and
        stop when the budget is spent (the estimate can be wrong on a loaded machine). Keep
        each face found with the cell its centre lies in. Returns the cells scanned and the
        faces whose centre lies in a cell that was not (used on this frame only)."""
        scanned: set[tuple[int, int]] = set()
        transient: list[Box] = []
        fine, ref_thumb = self.fine, self._ref_thumb
        assert fine is not None and ref_thumb is not None  # only called with both in place
        t = THUMB_PER_CELL
        started = time.perf_counter()
        for row in range(grid.rows):
            for first, last in _runs(sorted(c for r, c in chosen if r == row)):
                if time.perf_counter() - started > budget_s:
                    return scanned, transient
                span = Rect(
                    grid.xs[first],
                    grid.ys[row],
                    grid.xs[last + 1] - grid.xs[first],
                    grid.ys[row + 1] - grid.ys[row],
                )
                win = self._window(grid, span)
                crop = image[win.y : win.y + win.h, win.x : win.x + win.w]
                t0 = time.perf_counter()
                found = fine.detect_native(crop)
                took_us = (time.perf_counter() - t0) * 1e6
                kpx = crop.shape[0] * crop.shape[1] / 1000
                self._us_per_kpx = 0.7 * self._us_per_kpx + 0.3 * took_us / max(kpx, 1.0)
                run = {(row, c) for c in range(first, last + 1)}
                for rc in run:
                    cell = self._cells[rc[0]][rc[1]]
                    cell.boxes, cell.scanned_at = [], now
                    ref_thumb[row * t : (row + 1) * t, rc[1] * t : (rc[1] + 1) * t] = thumb[
                        row * t : (row + 1) * t, rc[1] * t : (rc[1] + 1) * t
                    ]
                scanned |= run
                for f in found:
                    box = Box(win.x + f.x, win.y + f.y, f.w, f.h, f.score)
                    rc = grid.cell_of(box.x + box.w / 2, box.y + box.h / 2)
                    if rc in run:
                        self._cells[rc[0]][rc[1]].boxes.append(box)
                    else:
                        transient.append(box)
        return scanned, transient


def _shift_explains(prev: np.ndarray, cur: np.ndarray, dx: int, dy: int) -> bool:
    """Whether moving the whole picture by (dx, dy) explains the new frame: most of it then
    matches, and clearly more than without moving. A large object crossing a still camera's
    view also gives a phase-correlation peak, but the background matches better unmoved."""
    h, w = cur.shape
    ring = np.ones((3, 3), np.uint8)

    def matching(a: np.ndarray, b: np.ndarray) -> float:
        return float(
            np.mean(
                (b <= cv2.dilate(a, ring) + CHANGE_LEVEL) & (b >= cv2.erode(a, ring) - CHANGE_LEVEL)
            )
        )

    moved = matching(
        prev[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)],
        cur[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)],
    )
    return moved >= 0.6 and moved >= matching(prev, cur) + 0.1


class _EdgeGuard:
    """Covers motion that comes in at the border until the detector has seen a face in it.

    YuNet misses faces cut by the frame edge (and half-hidden ones): someone stepping in is
    readable for a few frames before their face is whole enough to be found. So a moving blob
    (thumbnail difference with the previous frame) that touches the border, or overlaps such
    a blob of the frames before, is covered while it moves and ``EDGE_HOLD_FRAMES`` after.
    A face detected inside it (its track covers the face; the rest of the person is not
    private) does not uncover all of it: one blob can hold several faces (a group, a photo
    sliding in), and the others may still be cut by the edge. So a blob with a face found in
    it keeps a band covered along each stretch of border where it meets the border,
    ``EDGE_BAND_FACES`` times the largest face found in it deep (a face YuNet misses for being
    cut shows less than ~70 % of itself: a band twice a neighbour's size covers one up to
    about three times as large); one that no longer meets the border is uncovered.

    Motion over ``EDGE_MAX_SHARE`` of the frame (a cut, or a pan) cannot be told apart from
    what enters at the border: ``cut`` is then True and the caller decides.

    With no previous frame of the same size (a start, a new frame size, a frame after the
    source was lost) nothing can be seen moving: ``has_history`` is False and the caller covers
    that frame whole. Regions held at the old size are rescaled to the new one."""

    def __init__(self) -> None:
        self._prev: np.ndarray | None = None
        self._size: tuple[int, int] | None = None  # frame size of ``_prev``
        self._held: list[tuple[Rect, int]] = []  # (region in frame pixels, frames since moving)
        self.cut = False  # the last update saw motion over EDGE_MAX_SHARE of the frame

    def has_history(self, thumb: np.ndarray, grid: _Grid) -> bool:
        """Whether ``thumb`` can be compared with a previous frame of the same size."""
        return (
            self._prev is not None
            and self._prev.shape == thumb.shape
            and self._size == (grid.width, grid.height)
        )

    def forget_previous(self) -> None:
        self._prev = None

    def update(self, thumb: np.ndarray, grid: _Grid, faces: list[Box]) -> list[Rect]:
        history = self.has_history(thumb, grid)
        prev, old_size = self._prev, self._size
        self._prev, self._size = thumb, (grid.width, grid.height)
        self.cut = False
        if not history or prev is None:
            if old_size is not None and old_size != self._size:
                self._held = [
                    (_scale_rect(rect, grid.width / old_size[0], grid.height / old_size[1]), age)
                    for rect, age in self._held
                ]
            return [rect for rect, _ in self._held]
        moving = (np.abs(thumb - prev) > CHANGE_LEVEL).astype(np.uint8)
        if moving.mean() > EDGE_MAX_SHARE:
            self.cut = True
            return [rect for rect, _ in self._held]
        moving = cv2.dilate(moving, np.ones((5, 5), np.uint8))
        _, labels, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
        th, tw = thumb.shape
        sx, sy = grid.width / tw, grid.height / th
        fresh: list[tuple[Rect, int, list[Contact]]] = []  # region, age, where it meets the border
        for label, (x, y, w, h, area) in enumerate(stats[1:], start=1):
            if area < CHANGE_PIXELS:
                continue
            rect = Rect(int(x * sx), int(y * sy), math.ceil(w * sx), math.ceil(h * sy))
            at_border = x == 0 or y == 0 or x + w >= tw or y + h >= th
            if at_border or any(_overlaps(rect, held) for held, _ in self._held):
                fresh.append((rect, 0, _contacts(labels == label, grid)))
        kept = [
            (rect, age + 1, _sides(rect, grid))
            for rect, age in self._held
            if age + 1 < EDGE_HOLD_FRAMES and not any(_overlaps(rect, new) for new, _, _ in fresh)
        ]
        self._held = []
        for rect, age, contacts in fresh + kept:
            inside = [face for face in faces if _contains(rect, face)]
            if not inside:
                self._held.append((rect, age))
                continue
            depth = EDGE_BAND_FACES * max(max(face.w, face.h) for face in inside)
            self._held.extend((_band(contact, depth, grid), age) for contact in contacts)
        return [rect for rect, _ in self._held]


def _contacts(blob: np.ndarray, grid: _Grid) -> list[Contact]:
    """Where a moving blob (thumbnail mask) meets the frame's border: per side, each run of
    blob pixels on that side's outermost thumbnail line, in frame pixels. A face cut by the
    edge that moves lies over such a run."""
    th, tw = blob.shape
    sx, sy = grid.width / tw, grid.height / th
    out: list[Contact] = []
    for side, line, scale in (
        ("top", blob[0], sx),
        ("bottom", blob[-1], sx),
        ("left", blob[:, 0], sy),
        ("right", blob[:, -1], sy),
    ):
        for lo, hi in _runs([int(i) for i in np.flatnonzero(line)]):
            out.append((side, int(lo * scale), math.ceil((hi + 1) * scale)))
    return out


def _sides(rect: Rect, grid: _Grid) -> list[Contact]:
    """The sides of ``rect`` on the frame's border (a region held from an earlier frame: where
    it met the border is no longer known more closely)."""
    out: list[Contact] = []
    if rect.y <= 0:
        out.append(("top", rect.x, rect.x + rect.w))
    if rect.y + rect.h >= grid.height:
        out.append(("bottom", rect.x, rect.x + rect.w))
    if rect.x <= 0:
        out.append(("left", rect.y, rect.y + rect.h))
    if rect.x + rect.w >= grid.width:
        out.append(("right", rect.y, rect.y + rect.h))
    return out


def _band(contact: Contact, depth: float, grid: _Grid) -> Rect:
    """The band ``depth`` pixels deep into the frame from a stretch of its border, REGION_PAD_PX
    longer at both ends, within the frame."""
    side, lo, hi = contact
    d = min(math.ceil(depth), grid.width if side in ("left", "right") else grid.height)
    along = grid.width if side in ("top", "bottom") else grid.height
    a0, a1 = max(0, lo - REGION_PAD_PX), min(along, hi + REGION_PAD_PX)
    if side == "top":
        return Rect(a0, 0, a1 - a0, d)
    if side == "bottom":
        return Rect(a0, grid.height - d, a1 - a0, d)
    if side == "left":
        return Rect(0, a0, d, a1 - a0)
    return Rect(grid.width - d, a0, d, a1 - a0)


def _scale_rect(rect: Rect, sx: float, sy: float) -> Rect:
    """``rect`` in the pixels of a frame scaled by (sx, sy), rounded outward."""
    x0, y0 = math.floor(rect.x * sx), math.floor(rect.y * sy)
    x1, y1 = math.ceil((rect.x + rect.w) * sx), math.ceil((rect.y + rect.h) * sy)
    return Rect(x0, y0, x1 - x0, y1 - y0)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def _contains(rect: Rect, face: Box) -> bool:
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    return rect.x <= cx <= rect.x + rect.w and rect.y <= cy <= rect.y + rect.h


def _runs(cols: list[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 5] -> [(1, 3), (5, 5)]"""
    out: list[tuple[int, int]] = []
    for c in cols:
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def _dedupe(boxes: list[Box], same: float = 0.5) -> list[Box]:
    """One box per face: the coarse and fine passes (and a cell's kept result) often find the
    same face; a box and those that overlap it by IoU > ``same`` become their union (the
    passes differ in where they put the forehead and chin: the union covers both)."""
    boxes = sorted((b for b in boxes if b.w > 0 and b.h > 0), key=lambda b: b.score, reverse=True)
    overlaps = iou_matrix(boxes, boxes) > same
    absorbed = np.zeros(len(boxes), bool)
    out: list[Box] = []
    for i, box in enumerate(boxes):
        if absorbed[i]:
            continue
        group = np.flatnonzero(overlaps[i] & ~absorbed)
        absorbed[group] = True
        x0 = min(boxes[j].x for j in group) if group.size else box.x
        y0 = min(boxes[j].y for j in group) if group.size else box.y
        x1 = max(boxes[j].x + boxes[j].w for j in group) if group.size else box.x + box.w
        y1 = max(boxes[j].y + boxes[j].h for j in group) if group.size else box.y + box.h
        out.append(Box(x0, y0, x1 - x0, y1 - y0, box.score))
    return out


def create_scanner(cfg: FacesSection) -> FaceScanner | None:
    """The configured face detector as a scanner (None when faces are off): YuNet gets the
    native-resolution cell passes unless ``faces.small_faces`` is off; other detectors
    (Haar, or the stand-in that covers whole frames when no detector is usable) run their
    whole-frame pass only."""
    coarse = create_face_detector(cfg)
    if coarse is None:
        return None
    fine = None
    if cfg.small_faces and isinstance(coarse, YuNetDetector):
        # a network of its own: the coarse pass keeps its input size
        fine = YuNetDetector(coarse.model, coarse.detect_width, cfg.fine_score_threshold)
    return FaceScanner(coarse, fine)
