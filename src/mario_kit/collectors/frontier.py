"""The frontier collector: Go-Explore's "first return, then explore" (Ecoffet et al., Nature 2021) on
the emulator, so that a dataset covers whole stages without training an agent.

An archive keeps a *cell* for each place Mario has stood: the stage, his x and y in 32-pixel buckets
(`cell_key`). For each cell it keeps the shortest way found there from the stage's reset (joypad
bytes, one per emulator frame), how often it was visited and chosen, and, as a cache, an emulator
snapshot. An episode picks a cell (`Archive.choose`: farther along and rarely chosen weigh more),
returns to the state CONTEXT_STEPS steps before it, walks those steps again (so the world model's
context frames are real ones), then explores with the base policy (sticky random by default).

Every episode stays replayable from reset: it stores the joypad bytes from the reset to its frame 0
(`extra/start_joypad`, docs/FORMAT.md) and `extra.prefix_steps`, the steps that returned to the
cell. Snapshots are never written: the archive file (`mario-kit.frontier.json` in the dataset
folder; one a worker with several, which take in each other's: `share`) holds the paths, and a cell
without a snapshot (found by another worker, or in an earlier run) is reached again by replaying its path.
A snapshot is kept only where, restored into another emulator, it plays on as the live game did
(`FrontierPolicy._restores_exactly`): on rare frames nes-py's snapshot leaves out state that matters.

Where x stops measuring progress: the castle mazes send Mario back to an earlier x when he takes
a wrong way. 4-4 checks one way at a time, so the way on shows as new x; 7-4 checks three before
it sends him back, so a cell there also holds the loop's checkpoint counters (`MarioEnv.maze`), and a
place on a way already wrong is not offered. A frame of a loop reads x 65,535 (`is_place`). 8-4's way
on is down pipes, which the `simple` action set cannot press. Still told apart by nothing: a bonus
room reached by a pipe shares x with the stage above it. The benchmark names the stages left unfinished and why
(docs/BENCHMARKS_LOG.md, "Frontier collector").
"""

from __future__ import annotations

import base64
import math
import re
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mario_kit import UserError
from mario_kit.atomic import write_json_atomic
from mario_kit.emulator import X_WRAPPED, MarioEnv, Snapshot, run_start
from mario_kit.datasets import format as F
from mario_kit.trust import read_json, regular_file_problem

ARCHIVE = "mario-kit.frontier.json"
SCHEMA = 1
CONTEXT_STEPS = 4  # steps walked again before the cell: the context a world-model window needs
CELL_PX = 32  # x and y buckets of a cell, in pixels (two blocks)
SAVE_EVERY = 5  # episodes between archive writes (and at the end); with several workers, exchanges
MAX_ARCHIVE_BYTES = 64 << 20  # a file larger than this is refused before it is parsed
# How much farther cells weigh (Archive.choose): chosen against a weight linear in x and one in x^2 on
# 1-1 at equal budgets (docs/BENCHMARKS_LOG.md, "Frontier collector").
FORWARD = 3.0
# Deaths whose ending (collect --ending-steps) is recorded per cell: most frontier episodes end in a
# death at the same few gaps, and recording each would fill the data with one animation.
DEATH_ENDINGS = 1


def archive_name(worker: int, workers: int) -> str:
    return f"mario-kit.frontier.{worker + 1}-of-{workers}.json"


def cell_key(level: str, info: dict[str, Any], maze: tuple[int, int] = (0, 0)) -> str:
    """Where Mario is, coarsely: the stage and his position in 32-pixel buckets. y matters where x
    alone does not tell places apart (a pipe's top and its foot, the castles' upper and lower ways);
    in a castle maze's loop, `maze` (`MarioEnv.maze`: checkpoints passed right, passed) tells the
    same x on the way on from the same x on a way that will be sent back."""
    key = f"{level}:{int(info.get('x_pos', 0)) // CELL_PX}:{int(info.get('y_pos', 0)) // CELL_PX}"
    return key + (f":{maze[0]}-{maze[1]}" if maze[1] else "")


def is_place(info: dict[str, Any]) -> bool:
    """Whether `info` says where Mario is: not the frame of a castle maze's loop (emulator.X_WRAPPED);
    as "the farthest" cell it would flatten every other cell's weight."""
    return int(info.get("x_pos", 0)) < X_WRAPPED


@dataclass
class Cell:
    key: str
    start: bytes  # joypad bytes from the stage's reset to the state the return begins at
    tail: list[int]  # the actions of the steps from there to the cell (each held for the frame skip)
    x: int
    visits: int = 0
    chosen: int = 0
    snap: Snapshot | None = field(default=None, repr=False)  # cache of the state at the end of `start`
    info: dict[str, Any] | None = field(default=None, repr=False)

    def length(self, frame_skip: int) -> int:
        """Emulator frames from reset to the cell: shorter ways replace longer ones."""
        return len(self.start) + frame_skip * len(self.tail)


@dataclass
class Begin:
    """Where an episode starts: the restored frame and info, the joypad bytes that lead there from
    reset, and the steps that walk on to the chosen cell."""

    frame: np.ndarray
    info: dict[str, Any]
    start_joypad: np.ndarray
    steps: list[int]


class Archive:
    """The cells of one collection folder (all its levels), with the settings they were found under."""

    def __init__(self, action_set: str, frame_skip: int):
        self.action_set, self.frame_skip = action_set, frame_skip
        self.cells: dict[str, Cell] = {}
        self.deaths: dict[str, int] = {}  # cell key -> deaths recorded there with their ending

    def choose(self, rng: np.random.Generator, level: str) -> Cell | None:
        """A cell of `level` to return to, or None for the stage's reset (always a candidate, with
        the weight of a cell at x 0 never chosen, so that the start keeps being explored too). A
        cell weighs exp(FORWARD x / farthest x) / sqrt(1 + times chosen): the frontier is e^3 = 20
        times a fresh cell at the start, and a cell chosen often gives way to others."""
        cells = [c for c in self.cells.values() if c.key.startswith(level + ":")]
        if not cells:
            return None
        far = max(c.x for c in cells) or 1
        w = np.array([1.0] + [math.exp(FORWARD * c.x / far) / math.sqrt(1 + c.chosen) for c in cells])
        i = int(rng.choice(len(w), p=w / w.sum()))
        if i == 0:
            return None
        cells[i - 1].chosen += 1
        return cells[i - 1]

    def would_keep(self, cell: Cell) -> bool:
        """Whether `offer` would keep `cell`: its place is new or the way there is shorter."""
        old = self.cells.get(cell.key)
        return old is None or cell.length(self.frame_skip) < old.length(self.frame_skip)

    def offer(self, cell: Cell) -> bool:
        """Keep `cell` if its place is new or the way there is shorter; counts the visit either way."""
        old, keep = self.cells.get(cell.key), self.would_keep(cell)
        if old is not None:
            old.visits += 1
            if not keep:
                return False
            cell.visits, cell.chosen = old.visits, old.chosen
        else:
            cell.visits = 1
        self.cells[cell.key] = cell
        return True

    def merge(self, other: Archive) -> set[str]:
        """Take in the cells of another archive (a peer worker's): places new here, and shorter ways to
        places known here; and its death counts where higher. Repeated merges of the same cells change
        nothing. Returns the keys that changed."""
        changed = set()
        for cell in other.cells.values():
            old = self.cells.get(cell.key)
            if self.would_keep(cell):
                if old is not None:
                    cell.visits, cell.chosen = max(old.visits, cell.visits), max(old.chosen, cell.chosen)
                self.cells[cell.key] = cell
                changed.add(cell.key)
        for key, n in other.deaths.items():
            if n > self.deaths.get(key, 0):
                self.deaths[key] = n
                changed.add(key)
        return changed

    def to_json(self, keys: set[str] | None = None) -> dict[str, Any]:
        """The archive as JSON (its file's form); `keys`: only these cells and deaths (a change handed on)."""
        cells = [_cell_json(c) for k, c in self.cells.items() if keys is None or k in keys]
        deaths = {k: n for k, n in self.deaths.items() if keys is None or k in keys}
        return {"kind": "mario-kit-frontier-archive", "schema": SCHEMA, "action_set": self.action_set,
                "frame_skip": self.frame_skip, "cells": cells, "deaths": deaths}  # fmt: skip

    @classmethod
    def load(cls, path: Path, action_set: str, frame_skip: int) -> Archive:
        """The folder's archive, or an empty one; refused in one line when it was made under other
        settings or is not an archive (the paths it holds are checked as they are replayed)."""
        if not path.exists() and not path.is_symlink():
            return cls(action_set, frame_skip)
        problem = regular_file_problem(path)
        if problem:
            raise UserError(f"{path}: {problem}")
        d = read_json(path, max_bytes=MAX_ARCHIVE_BYTES, what="frontier archive")
        return cls.from_json(d, action_set, frame_skip, str(path))

    @classmethod
    def from_json(cls, d: Any, action_set: str, frame_skip: int, where: str = "the archive") -> Archive:
        """An archive from `to_json`'s form (a file's, or cells a peer handed in), every entry checked."""
        if not isinstance(d, dict) or d.get("kind") != "mario-kit-frontier-archive" or d.get("schema") != SCHEMA:
            raise UserError(f"{where} is not a mario-kit frontier archive (schema {SCHEMA})")
        if (d.get("action_set"), d.get("frame_skip")) != (action_set, frame_skip):
            raise UserError(
                f"{where} was grown with action set {d.get('action_set')} and frame skip {d.get('frame_skip')}; "
                f"collect into another folder or use those"
            )
        archive = cls(action_set, frame_skip)
        n_actions = len(F.get_action_set(action_set))
        try:
            for c in d["cells"]:
                cell = _cell(c, n_actions)
                archive.cells[cell.key] = cell
            for key, n in d.get("deaths", {}).items():  # absent in archives from before it was kept
                if not _KEY.fullmatch(key) or type(n) is not int or not 0 <= n < 1 << 31:
                    raise ValueError(f"deaths at {key[:40]!r}: {str(n)[:20]!r}")
                archive.deaths[key] = n
        except (KeyError, TypeError, ValueError, AttributeError, zlib.error) as e:
            raise UserError(f"{where}: an entry that does not parse ({e}); move the file aside") from None
        return archive


_KEY = re.compile(r"[1-8]-[1-4]:\d{1,4}:\d{1,3}(:\d{1,3}-\d{1,3})?")  # what cell_key writes


def _cell_json(c: Cell) -> dict[str, Any]:
    start = base64.b64encode(zlib.compress(c.start)).decode()
    return {"key": c.key, "start": start, "tail": c.tail, "x": c.x, "visits": c.visits, "chosen": c.chosen}


def _cell(c: dict[str, Any], n_actions: int) -> Cell:
    """A cell of an archive file, its sizes and ranges checked before anything of them is used."""
    z = zlib.decompressobj()
    start = z.decompress(base64.b64decode(c["start"], validate=True), F.MAX_START_FRAMES)
    if z.unconsumed_tail:
        raise ValueError(f"a way from reset longer than {F.MAX_START_FRAMES} frames")
    if not z.eof:
        raise ValueError("a way from reset cut short (not a whole zlib stream)")
    tail = [int(a) for a in c["tail"]]
    if len(tail) > CONTEXT_STEPS or any(not 0 <= a < n_actions for a in tail):
        raise ValueError(f"a return of more than {CONTEXT_STEPS} steps or an action outside the action set")
    if not _KEY.fullmatch(str(c["key"])):
        raise ValueError(f"cell key {str(c['key'])[:40]!r}")
    return Cell(str(c["key"]), start, tail, int(c["x"]), int(c["visits"]), int(c["chosen"]))


def take_in_folder(archive: Archive, folder: Path, but: str = "") -> None:
    """Merge every archive file of `folder` (but the one named `but`) into `archive`."""
    for path in sorted(folder.glob("mario-kit.frontier*.json")):
        if path.name != but:
            archive.merge(Archive.load(path, archive.action_set, archive.frame_skip))


@dataclass
class _Step:
    """What the return needs of a step taken: the state before it and how it was taken."""

    snap: Snapshot
    info: dict[str, Any]
    offset: int  # joypad bytes from reset before the step
    action: int


class FrontierPolicy:
    """Returns to a cell of the archive, then explores with a base policy; grows the archive."""

    name = "frontier"
    source = "frontier"

    def __init__(self, base: Any, archive: str = ""):
        self.base = base  # what explores after the return (collectors.policies: sticky random)
        self.folder = Path(archive) if archive else None
        self.file = ARCHIVE
        self.archive: Archive | None = None
        self.episodes = 0
        # A shared archive's exchange (a Ray actor's, collectors.distributed): hands in a change of this
        # archive (`Archive.to_json(keys)`), returns the changes the others handed in since the last call.
        self.exchange: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.changed: set[str] = set()  # cells and deaths changed here since the last exchange
        self.scratch: MarioEnv | None = None  # where a new cell's snapshot is checked (`_restores_exactly`)

    def share(self, worker: int, workers: int) -> None:
        """With several workers each writes its own file (`mario-kit.frontier.W-of-N.json`) and takes in
        the others' every SAVE_EVERY episodes: one archive in effect, shared through the folder. What a
        worker records then depends on when the others saved; one worker is reproducible from its seed."""
        self.file = ARCHIVE if workers == 1 else archive_name(worker, workers)

    def reset(self, rng: np.random.Generator, n_actions: int) -> None:
        self.base.reset(rng, n_actions)
        self.rng = rng
        self.episodes += 1
        # a killed collection loses at most this many episodes' cells (on Ray, `flush` after every
        # episode already exchanges them)
        if self.episodes % SAVE_EVERY == 0 and self.exchange is None:
            self.save()
            self.take_in()

    def act(self, frame: np.ndarray, info: dict[str, Any]) -> int:
        return self.base.act(frame, info)

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base.params(), "cell_px": CELL_PX, "context_steps": CONTEXT_STEPS}

    def begin(self, env: MarioEnv, action_set: str, frame_skip: int) -> Begin | None:
        """Restore a chosen cell's return state (None: the episode starts at the stage's reset)."""
        if self.archive is None:  # the folder's (or, built without one, a fresh one in memory)
            folder = self.folder
            self.archive = (
                Archive.load(folder / self.file, action_set, frame_skip) if folder else Archive(action_set, frame_skip)
            )
            self.take_in()
        self.level, self.env = env.level, env
        self.path = bytearray()
        self.recent: deque[_Step] = deque(maxlen=CONTEXT_STEPS)
        cell = self.archive.choose(self.rng, env.level)
        if cell is None:
            return None
        if cell.snap is None:  # not reached in this process yet: replay its way from reset, once
            _, info = env.reset()
            cell.info = run_start(env, np.frombuffer(cell.start, np.uint8)) or info
            cell.snap = env.snapshot()
        frame = env.restore(cell.snap)
        self.path = bytearray(cell.start)
        assert cell.info is not None
        return Begin(frame, dict(cell.info), np.frombuffer(cell.start, np.uint8).copy(), list(cell.tail))

    def before_step(self, env: MarioEnv, info: dict[str, Any], action: int) -> None:
        self.recent.append(_Step(env.snapshot(), dict(info), len(self.path), action))

    def after_step(self, joypad: list[int], info: dict[str, Any], ended: bool) -> None:
        """Count the step's bytes into the way from reset; offer the place reached to the archive."""
        self.path.extend(joypad)
        if ended or info.get("is_dying") or self.archive is None or not self.recent:
            return
        maze = self.env.maze()
        if not is_place(info) or maze[0] < maze[1]:  # a wrong way in a maze: the game will send him back
            return
        first = self.recent[0]
        tail = [s.action for s in self.recent]
        key = cell_key(self.level, info, maze)
        cell = Cell(key, bytes(self.path[: first.offset]), tail, int(info.get("x_pos", 0)))
        if self.archive.would_keep(cell) and not self._restores_exactly(first):
            return  # an episode started from this snapshot would not replay from reset
        cell.snap, cell.info = first.snap, first.info
        if self.archive.offer(cell):
            self.changed.add(cell.key)

    def ending_limit(self, info: dict[str, Any], limit: int) -> int:
        """The ending steps to record after this episode's end: all of a flag's; a death's only where
        fewer than DEATH_ENDINGS deaths were recorded with theirs."""
        if info.get("flag_get") or self.archive is None or limit <= 0:
            return limit
        key = cell_key(self.level, info, self.env.maze())
        n = self.archive.deaths.get(key, 0)
        if n >= DEATH_ENDINGS:
            return 0
        self.archive.deaths[key] = n + 1
        self.changed.add(key)
        return limit

    def _restores_exactly(self, first: _Step) -> bool:
        """Whether `first.snap`, restored into another emulator and played on with the bytes played
        since, reaches the live game's RAM and screen. nes-py's dump_state leaves some emulator state
        out: on rare frames a restored game plays on differently from the one it was taken from (Mario
        a pixel off), so a cell whose snapshot is such a frame is not kept; the next step offers it
        again. It is the frame's doing, not the way's (a snapshot of a replay from reset does the
        same), so a cell checked here holds for the workers that replay its way too."""
        if self.scratch is None or self.scratch.level != self.level:
            if self.scratch is not None:
                self.scratch.close()
            self.scratch = MarioEnv(self.level)
            self.scratch.reset()
        if self.scratch.ended:  # a check that played on into a death: `done` is not in a snapshot
            self.scratch.reset()
        self.scratch.restore(first.snap)
        for byte in self.path[first.offset :]:
            self.scratch.step_frame(byte)
        return np.array_equal(self.scratch.ram, self.env.ram) and np.array_equal(self.scratch.screen, self.env.screen)

    def take_in(self) -> None:
        """Merge the folder's other archive files (other workers', now or in an earlier run) into ours;
        with an `exchange`, what the others handed in."""
        if self.exchange is not None:
            self.flush()
        if self.archive is not None and self.folder is not None:
            take_in_folder(self.archive, self.folder, but=self.file)

    def flush(self) -> None:
        """With an `exchange`: hand in the cells found or bettered here since the last call, take in
        the others'. A cell taken in has no snapshot here: it is replayed from reset when chosen."""
        if self.exchange is None or self.archive is None:
            return
        a = self.archive
        theirs = self.exchange(a.to_json(self.changed))
        self.changed = set()
        a.merge(Archive.from_json(theirs, a.action_set, a.frame_skip, "the shared archive"))

    def save(self) -> None:
        if self.archive is not None and self.folder is not None:
            write_json_atomic(self.folder / self.file, self.archive.to_json())

    def close(self) -> None:
        """Write the archive with what the other workers have saved taken in: the last to finish holds all."""
        self.take_in()
        self.save()
        if self.scratch is not None:
            self.scratch.close()
            self.scratch = None
