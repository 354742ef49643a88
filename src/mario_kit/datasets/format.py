"""Episode format v1: the one place where on-disk names, dtypes and the schema version live.

One HDF5 file per episode (see docs/FORMAT.md). Everything else reads and writes through
`datasets.episode`, which uses only the names defined here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

SCHEMA_VERSION = 1
FORMAT_NAME = "mario-kit-episode"
SUFFIX = ".h5"
PARTIAL_SUFFIX = ".h5.partial"  # an episode still being written (or left by a killed writer)


def partial_name(name: str) -> str:
    """The name an episode file `name` (ending in SUFFIX) has while it is written."""
    return name[: -len(SUFFIX)] + PARTIAL_SUFFIX


FRAME_SHAPE = (240, 256, 3)  # (height, width, RGB) as the NES renders it
FRAME_DTYPE = np.uint8

# Datasets at the file root.
FRAMES = "frames"  # (T+1, 240, 256, 3) uint8: frame t is what the player saw before action t
ACTIONS = "actions"  # (T,) uint8: index into the episode's action set
REWARDS = "rewards"  # (T,) float32: env reward summed over the frame skip
TERMINATED = "terminated"  # (T,) bool
TRUNCATED = "truncated"  # (T,) bool
JOYPAD = "joypad"  # (F,) uint8: the joypad byte of every emulator frame (replay)
STEP_FRAMES = "step_frames"  # (T,) uint8: emulator frames each step took (<= frame skip)
ACTION_JOYPAD = "action_joypad"  # (n_actions,) uint8: the joypad byte of each action index
INFO_GROUP = "info"  # group of (T,) columns: env `info` after each step
OVERRIDDEN = "overridden"  # (T,) bool: steps where a strategy or random factor replaced the policy
EXTRA_GROUP = "extra"  # optional group of arrays a collector or importer adds (e.g. the seed layout's originals)

# Info columns kept per step, with their on-disk dtype. `status` is nes-py's status string
# encoded as STATUS_CODES.
INFO_COLUMNS: dict[str, np.dtype] = {
    "x_pos": np.dtype(np.int32),
    "y_pos": np.dtype(np.int32),
    "world": np.dtype(np.uint8),
    "stage": np.dtype(np.uint8),
    "status": np.dtype(np.uint8),
    "life": np.dtype(np.int16),
    "time": np.dtype(np.int16),
    "score": np.dtype(np.int32),
    "coins": np.dtype(np.int16),
    "flag_get": np.dtype(np.bool_),
    "left_x_pos": np.dtype(np.uint8),
}
# Columns a reader does without: files written before they existed lack them.
OPTIONAL_COLUMNS = frozenset({f"{INFO_GROUP}/left_x_pos"})
STATUS_CODES = {"small": 0, "tall": 1, "fireball": 2}
PLACE_PX = 512  # a place: a stage and an x bucket of this width (two screens), as `evaluate --place-windows`
# scores the model and `balance --strategy place` evens out the data

# Every per-step (T,) dataset with its on-disk dtype, info columns by their path.
STEP_COLUMNS: dict[str, np.dtype] = {
    ACTIONS: np.dtype(np.uint8),
    REWARDS: np.dtype(np.float32),
    TERMINATED: np.dtype(np.bool_),
    TRUNCATED: np.dtype(np.bool_),
    STEP_FRAMES: np.dtype(np.uint8),
    OVERRIDDEN: np.dtype(np.bool_),
    **{f"{INFO_GROUP}/{k}": v for k, v in INFO_COLUMNS.items()},
}

# The `description` attribute of every dataset an episode file holds: units and meaning, so that
# h5dump alone explains the file (docs/FORMAT.md says the same at length).
DESCRIPTION_ATTR = "description"
DESCRIPTIONS: dict[str, str] = {
    FRAMES: "(T+1, 240, 256, 3) uint8 RGB screens; frame t is what the player saw before action t, frame T the last",
    ACTIONS: "(T,) action taken at frame t: an index into the action set (root attribute action_buttons)",
    REWARDS: "(T,) gym-super-mario-bros reward of step t, summed over its emulator frames (game units)",
    TERMINATED: "(T,) the game had ended the episode by step t (a death or the flag); the steps after the first "
    "true one are its ending sequence (root attribute ending_steps)",
    TRUNCATED: "(T,) the episode was cut at step t by a step limit",
    STEP_FRAMES: "(T,) emulator frames step t ran (the frame skip, fewer when the episode ended inside it)",
    JOYPAD: "(sum of step_frames,) the joypad byte of every emulator frame, in order: replays the episode from reset",
    OVERRIDDEN: "(T,) action t was chosen by a balancing strategy or the random factor, not the policy",
    ACTION_JOYPAD: "(n_actions,) the joypad byte of each action index",
    f"{INFO_GROUP}/x_pos": "(T,) Mario's x position in the level after step t (pixels)",
    f"{INFO_GROUP}/y_pos": "(T,) Mario's y position after step t (pixels, up is larger)",
    f"{INFO_GROUP}/world": "(T,) world number after step t (1-8)",
    f"{INFO_GROUP}/stage": "(T,) stage number after step t (1-4)",
    f"{INFO_GROUP}/status": "(T,) Mario's power-up after step t: 0 small, 1 tall, 2 fireball",
    f"{INFO_GROUP}/life": "(T,) lives left after step t",
    f"{INFO_GROUP}/time": "(T,) the game clock after step t (game seconds left)",
    f"{INFO_GROUP}/score": "(T,) score after step t (points)",
    f"{INFO_GROUP}/coins": "(T,) coins after step t",
    f"{INFO_GROUP}/flag_get": "(T,) Mario reached the flag at step t",
    f"{INFO_GROUP}/left_x_pos": "(T,) Mario's x from the screen's left edge after step t (pixels, 0-255)",
}

START_JOYPAD = "start_joypad"  # under extra/: how an episode that starts mid-stage is reached from reset
MAX_START_FRAMES = 1 << 20  # a start prefix longer than any stage's time limit (400 s x 60 frames) is refused
EXTRA_DESCRIPTIONS: dict[str, str] = {  # the `extra/` arrays mario-kit writes
    START_JOYPAD: "(n,) uint8 joypad byte of each emulator frame from the stage's reset to frame 0 of this "
    "episode (an episode that starts where another left off: the frontier collector); absent: frame 0 is the reset",
    "seed_y": "(T+1, width) the seed layout's frame_{i}_y labels of this episode's frames, as imported (dtype kept)",
    "seed_helperarr": "(T+1, 2) the seed layout's frame_{i}_helperarr [reward, life lost] of its frames, as imported",
}

# Root attributes. Values that are not scalars or strings are stored as JSON strings.
REQUIRED_ATTRS = (
    "format",
    "schema_version",
    "env_id",
    "rom_mode",
    "level",
    "frame_skip",
    "action_set",
    "action_buttons",
    "source",
    "policy",
    "seed",
    "created",
    "mario_kit_version",
    "package_versions",
    "length",
    "end",
)
JSON_ATTRS = ("action_buttons", "policy", "package_versions", "extra")
# Optional: the steps recorded after the game ended the episode (a death or the flag), while it played
# its ending sequence (the death animation; the flag, the walk into the castle). They are the last
# `ending_steps` steps: terminated is true from the end step on, rewards are 0. Absent (older files): 0.
ENDING_STEPS = "ending_steps"

END_REASONS = ("terminated", "flag", "truncated", "cut")  # how an episode ended

# HDF5 storage of frames: one frame a chunk (random access), gzip (deflate) level 3: smaller than
# level 1 for a little more compression time (bench/storage.py; docs/BENCHMARKS.md, "Frame storage").
FRAME_CHUNKS = (1, *FRAME_SHAPE)
FRAME_COMPRESSION = "gzip"
FRAME_COMPRESSION_OPTS = 3
COLUMN_CHUNK = 1024  # per-step columns: gzip-compressed so that a short episode's unused chunk tail costs nothing


@dataclass(frozen=True)
class ActionSet:
    """A named list of button combinations; an action is an index into `buttons`."""

    name: str
    buttons: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.buttons)

    @property
    def joypad(self) -> np.ndarray:
        """The NES joypad byte of each action index."""
        return np.array([buttons_to_byte(b) for b in self.buttons], dtype=np.uint8)

    def meaning(self, index: int) -> str:
        return "+".join(self.buttons[index])

    def to_json(self) -> str:
        return json.dumps([list(b) for b in self.buttons])

    @classmethod
    def from_attrs(cls, name: Any, buttons: Any) -> "ActionSet":
        """From stored attributes: the set's name and its buttons, as JSON text or as lists."""
        if isinstance(buttons, (str, bytes)):
            buttons = json.loads(buttons)
        return cls(str(name), tuple(tuple(b) for b in buttons))


JOYPAD_BITS = {
    "right": 0b10000000,
    "left": 0b01000000,
    "down": 0b00100000,
    "up": 0b00010000,
    "start": 0b00001000,
    "select": 0b00000100,
    "B": 0b00000010,
    "A": 0b00000001,
    "NOOP": 0,
}


def buttons_to_byte(buttons: tuple[str, ...] | list[str]) -> int:
    byte = 0
    for b in buttons:
        byte |= JOYPAD_BITS[b]
    return byte


def byte_to_buttons(byte: int) -> tuple[str, ...]:
    pressed = tuple(b for b, bit in JOYPAD_BITS.items() if bit and byte & bit)
    return pressed or ("NOOP",)


DIRECTIONS = ("right", "left", "down", "up")


def nearest_action(held: Iterable[str], aset: ActionSet) -> int:
    """The action of `aset` for the held buttons.

    Exact match when the set has the combination. Otherwise the nearest entry: an action never
    adds a direction that is not held; among the rest, the most held buttons and the fewest
    buttons not held win; ties prefer keeping the direction. So in `simple`, right+A+B+down ->
    right+A+B, A+B -> A, left+A -> left, B alone -> NOOP... (see tests/test_human.py for the table).
    Held buttons for which the set has nothing (left in `right`, up or down alone in `simple`) map
    to NOOP, and the collector prints a note the first time each such combination is held."""
    held_set = {b for b in held if b != "NOOP"}
    best, best_key = 0, None
    for i, buttons in enumerate(aset.buttons):
        bs = {b for b in buttons if b != "NOOP"}
        if bs == held_set:
            return i
        if any(b in DIRECTIONS and b not in held_set for b in bs):
            continue
        common, extra = len(bs & held_set), len(bs - held_set)
        key = (common - extra, any(b in DIRECTIONS for b in bs & held_set), -len(bs))
        if best_key is None or key > best_key:
            best, best_key = i, key
    return best


def action_table(aset: ActionSet) -> np.ndarray:
    """nearest_action for every joypad byte (index: byte)."""
    return np.array([nearest_action(byte_to_buttons(b), aset) for b in range(256)], dtype=np.uint8)


def _action_set(name: str, *actions: str) -> ActionSet:
    return ActionSet(name, tuple(tuple(a.split("+")) for a in actions))


# gym-super-mario-bros's RIGHT_ONLY, SIMPLE_MOVEMENT and COMPLEX_MOVEMENT, written out here so that the
# format (and the dataset and world-model tools) import without the emulator, e.g. on a GPU machine
# that trains from a store; tests/test_datasets.py checks them against the library's lists.
ACTION_SETS: dict[str, ActionSet] = {
    s.name: s
    for s in (
        _action_set("right", "NOOP", "right", "right+A", "right+B", "right+A+B"),
        _action_set("simple", "NOOP", "right", "right+A", "right+B", "right+A+B", "A", "left"),
        _action_set(
            "complex",
            "NOOP",
            "right",
            "right+A",
            "right+B",
            "right+A+B",
            "A",
            "left",
            "left+A",
            "left+B",
            "left+A+B",
            "down",
            "up",
        ),
    )
}


def get_action_set(name: str) -> ActionSet:
    from mario_kit import UserError

    try:
        return ACTION_SETS[name]
    except KeyError:
        raise UserError(f"unknown action set {name!r}; choose one of {', '.join(ACTION_SETS)}") from None


def map_actions(actions: np.ndarray, src: ActionSet, dst: ActionSet) -> np.ndarray:
    """Re-express actions of `src` in `dst` by their buttons (nearest entry, see nearest_action)."""
    table = np.array([nearest_action(b, dst) for b in src.buttons], dtype=np.uint8)
    return table[actions]


MAX_FRAME_SKIP = 64
_LEVEL = re.compile(r"[1-8]-[1-4]")


def header(raw) -> dict:
    """An episode file's root attributes (h5py's `attrs` mapping) as str/int values, checked against
    schema 1: the one header check of `Episode` and the dataset index. Raises ValueError."""
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}
    if attrs.get("format") != FORMAT_NAME:
        raise ValueError("not a mario-kit episode (no 'format' attribute)")
    check_attrs(attrs)
    return attrs


def check_attrs(attrs: dict) -> None:
    """Raise ValueError unless an episode's root attributes are what schema 1 says: every attribute
    a reader relies on, with its type and range (the data itself is checked by `validate`)."""
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise ValueError(f"missing attributes: {', '.join(missing)}")

    def integer(key: str, lo: int, hi: int) -> int:
        v = attrs[key]
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
            raise ValueError(f"attribute {key}={v!r}: expected an integer in [{lo}, {hi}]")
        return int(v)

    if integer("schema_version", 0, 1 << 31) != SCHEMA_VERSION:
        raise ValueError(f"schema version {attrs['schema_version']} (this mario-kit reads {SCHEMA_VERSION})")
    integer("frame_skip", 1, MAX_FRAME_SKIP)
    length = integer("length", 0, 1 << 40)
    if ENDING_STEPS in attrs and integer(ENDING_STEPS, 0, 1 << 40) > max(length - 1, 0):
        raise ValueError(
            f"attribute {ENDING_STEPS}={attrs[ENDING_STEPS]} with {length} steps: the end step comes first"
        )
    if int(attrs.get(ENDING_STEPS, 0)) and attrs["end"] not in ("terminated", "flag"):
        raise ValueError(f"attribute {ENDING_STEPS} on an episode that ended {attrs['end']!r}, not by the game")
    integer("seed", -1, (1 << 64) - 1)
    for key in ("env_id", "rom_mode", "level", "action_set", "source", "created", "end"):
        if not isinstance(attrs[key], str):
            raise ValueError(f"attribute {key} is not a string")
    if not _LEVEL.fullmatch(attrs["level"]):
        raise ValueError(f"level {attrs['level']!r} is not W-S (1-1 .. 8-4)")
    if attrs["end"] not in END_REASONS:
        raise ValueError(f"unknown end reason {attrs['end']!r}")
    if attrs["action_set"] not in ACTION_SETS:
        raise ValueError(f"unknown action set {attrs['action_set']!r}")
    for key in JSON_ATTRS:
        if key not in attrs:
            continue
        v = attrs[key]
        try:
            parsed = json.loads(v) if isinstance(v, str) else None
        except (json.JSONDecodeError, RecursionError):
            parsed = None
        want = list if key == "action_buttons" else dict
        if not isinstance(parsed, want):
            raise ValueError(f"attribute {key} is not a JSON {want.__name__}")
        if key == "action_buttons" and parsed != [list(b) for b in ACTION_SETS[attrs["action_set"]].buttons]:
            raise ValueError(f"action_buttons differ from the {attrs['action_set']} action set")


# --- balancing weights files (`mario-kit balance`, read by `dataset build --weights`) ----------------
WEIGHTS_META = "__meta__"  # the JSON entry of a weights .npz beside the per-episode arrays


def actions_digest(actions: np.ndarray) -> str:
    """What ties a weights file to the episodes it was computed for: their actions, hashed."""
    import xxhash

    return xxhash.xxh3_64_hexdigest(np.ascontiguousarray(actions, dtype=np.uint8).tobytes())
