"""Load a stable-baselines3 PPO agent file without unpickling anything in it.

An SB3 zip holds `data` (JSON, in which SB3 stores every non-JSON attribute as a base64
cloudpickle: spaces, schedules, classes, buffers) and torch `.pth` parts. `PPO.load` unpickles
those entries, so a shared agent file could run any code. Here:

- plain JSON entries are taken from an allow-list with their expected types;
- every pickled entry is read as opcodes only (`pickletools.genops`, which executes nothing) to
  check that it names only the globals a genuine SB3 file uses there; it is then rebuilt from
  the `mario_kit` record and the plain entries (spaces from the record's action set and the
  pipeline's observation shape, schedules from their constant values) and its bytes are dropped;
- the `.pth` parts load with `torch.load(weights_only=True)`.

Anything else (another algorithm, a custom policy, a callable schedule, a foreign global) is
refused with a UserError before any of it runs.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

from mario_kit import UserError

KIND = "mario-kit-ppo"  # the `mario_kit` record an agent file carries: its kind and schema,
SCHEMA = 1
OBS_SIZE = (84, 84)  # and the observation it was trained on (gray, OBS_SIZE, N_STACK frames)
N_STACK = 4

MAX_BYTES = 1 << 30  # uncompressed size of all parts together (far above a genuine agent's)
PARTS = {
    "data",
    "policy.pth",
    "policy.optimizer.pth",
    "pytorch_variables.pth",
    "_stable_baselines3_version",
    "system_info.txt",
}

_NUMPY = {
    ("numpy", "dtype"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
}
_RNG = {
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random.mtrand", "RandomState"),
    ("numpy.random._mt19937", "MT19937"),
}
_SCHEDULES = {
    ("stable_baselines3.common.utils", "FloatSchedule"),
    ("stable_baselines3.common.utils", "ConstantSchedule"),
}
# The globals each pickled entry of a genuine PPO file may name (it is rebuilt, never unpickled).
_PICKLED: dict[str, set[tuple[str, str]]] = {
    "policy_class": {("stable_baselines3.common.policies", "ActorCriticCnnPolicy")},
    "rollout_buffer_class": {("stable_baselines3.common.buffers", "RolloutBuffer")},
    "observation_space": {("gymnasium.spaces.box", "Box")} | _NUMPY | _RNG,
    "action_space": {("gymnasium.spaces.discrete", "Discrete")} | _NUMPY | _RNG,
    "clip_range": _SCHEDULES,
    "lr_schedule": _SCHEDULES,
    "_last_obs": _NUMPY,
    "_last_episode_starts": _NUMPY,
    "ep_info_buffer": {("collections", "deque")},
    "ep_success_buffer": {("collections", "deque")},
}
_NUM = (int, float)
# Plain entries: the types they may have. SB3 applies them to the model as attributes.
_PLAIN: dict[str, tuple] = {
    "verbose": (int,),
    "policy_kwargs": (dict,),
    "num_timesteps": (int,),
    "_total_timesteps": (int,),
    "_num_timesteps_at_start": (int,),
    "seed": (int, type(None)),
    "action_noise": (type(None),),
    "start_time": _NUM,
    "learning_rate": _NUM,
    "tensorboard_log": (type(None),),
    "_last_original_obs": (type(None),),
    "_episode_num": (int,),
    "use_sde": (bool,),
    "sde_sample_freq": (int,),
    "_current_progress_remaining": _NUM,
    "_stats_window_size": (int,),
    "_n_updates": (int,),
    "n_envs": (int,),
    "n_steps": (int,),
    "gamma": _NUM,
    "gae_lambda": _NUM,
    "ent_coef": _NUM,
    "vf_coef": _NUM,
    "max_grad_norm": _NUM,
    "rollout_buffer_kwargs": (dict,),
    "batch_size": (int,),
    "n_epochs": (int,),
    "clip_range_vf": (type(None),) + _NUM,
    "normalize_advantage": (bool,),
    "target_kl": (type(None),) + _NUM,
    "mario_kit": (dict,),
}
_POLICY_KWARGS = {
    "net_arch",
    "normalize_images",
    "share_features_extractor",
    "ortho_init",
    "log_std_init",
    "full_std",
    "use_expln",
    "squash_output",
}


def pickle_globals(blob: bytes) -> set[tuple[str, str]]:
    """The (module, name) pairs a pickle would import, read from its opcodes without executing it.
    A STACK_GLOBAL whose operands are not plainly strings counts as ('?', '?')."""
    memo: dict[int, Any] = {}
    stack: list[Any] = []  # only what matters here: the last pushed values (strings or None)
    found: set[tuple[str, str]] = set()
    try:
        for op, arg, _ in pickletools.genops(blob):
            name = op.name
            if name in ("GLOBAL", "INST"):
                mod, _, attr = str(arg).partition(" ")
                found.add((mod, attr))
                stack.append(None)
            elif name == "STACK_GLOBAL":
                a, b = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
                found.add((a, b) if isinstance(a, str) and isinstance(b, str) else ("?", "?"))
                del stack[-2:]
                stack.append(None)
            elif name in (
                "SHORT_BINUNICODE",
                "BINUNICODE",
                "BINUNICODE8",
                "UNICODE",
                "SHORT_BINSTRING",
                "BINSTRING",
                "STRING",
            ):
                stack.append(str(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(str(arg))] = stack[-1] if stack else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(str(arg))))
            elif name in ("EXT1", "EXT2", "EXT4"):  # the copyreg extension registry: names a global indirectly
                found.add(("?ext", str(arg)))
            else:
                stack.append(None)
    except Exception as e:  # noqa: BLE001  (truncated or malformed: genops raises ValueError and others)
        raise UserError(f"malformed pickled entry ({e})") from None
    return found


def _refuse(path: Path, why: str) -> UserError:
    return UserError(f"{path}: refused as an agent file: {why} (agent files are never unpickled)")


def read_parts(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = {i.filename for i in infos}
            if not names <= PARTS:
                raise _refuse(path, f"unexpected parts {sorted(names - PARTS)}")
            if "data" not in names or "policy.pth" not in names:
                raise _refuse(path, "no data or policy.pth part")
            if sum(i.file_size for i in infos) > MAX_BYTES:
                raise _refuse(path, "parts larger than 1 GiB")
            return {i.filename: z.read(i) for i in infos}
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as e:
        raise UserError(f"{path} is not a stable-baselines3 PPO agent ({type(e).__name__}: {e})") from None


def _torch_part(path: Path, parts: dict[str, bytes], name: str, device: str) -> Any:
    import torch

    try:
        return torch.load(io.BytesIO(parts[name]), map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001  (weights_only refuses any global outside torch's safe list)
        raise _refuse(path, f"{name} does not load with weights_only=True ({type(e).__name__})") from None


def _check_record(path: Path, rec: Any) -> dict[str, Any]:
    from mario_kit.emulator import parse_levels
    from mario_kit.datasets import format as F

    if not isinstance(rec, dict) or rec.get("kind") != KIND:
        raise UserError(f"{path} is a PPO agent but not one of mario-kit (no mario_kit record)")
    try:
        parse_levels(str(rec["level"]))
        aset = F.get_action_set(str(rec["action_set"]))
        if [list(b) for b in aset.buttons] != rec["action_buttons"]:
            raise ValueError("action_buttons differ from the named action set")
        if not (isinstance(rec["frame_skip"], int) and 1 <= rec["frame_skip"] <= 16):
            raise ValueError(f"frame_skip {rec['frame_skip']!r}")
        if rec.get("max_episode_steps") is not None and not (
            isinstance(rec["max_episode_steps"], int) and rec["max_episode_steps"] >= 1
        ):
            raise ValueError(f"max_episode_steps {rec['max_episode_steps']!r}")
    except (KeyError, TypeError, ValueError, UserError) as e:
        raise _refuse(path, f"bad mario_kit record ({e})") from None
    return rec


def _constant(entry: dict[str, Any], default: float) -> float:
    """The constant of a pickled FloatSchedule(ConstantSchedule(val=x)), from SB3's readable copy."""
    m = re.fullmatch(r"ConstantSchedule\(val=([-+0-9.eE]+)\)", str(entry.get("value_schedule", "")))
    return float(m.group(1)) if m else default


def _plain_entries(path: Path, data: Any) -> dict[str, Any]:
    """The entries of `data` that are plain JSON (allow-listed, with their types). Each pickled entry
    is read as opcodes only and must name no global outside what a genuine file has there; its
    bytes are then dropped (load_ppo rebuilds it)."""
    if not isinstance(data, dict):
        raise _refuse(path, "data is not a JSON object")
    plain: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and ":serialized:" in value:
            if key not in _PICKLED:
                raise _refuse(path, f"pickled entry {key!r} is not one mario-kit rebuilds")
            try:
                blob = base64.b64decode(value[":serialized:"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise _refuse(path, f"entry {key!r} is not base64") from None
            foreign = pickle_globals(blob) - _PICKLED[key]
            if foreign:
                named = ", ".join(sorted(".".join(g) for g in foreign))
                raise _refuse(path, f"entry {key!r} names {named}")
        elif key in _PLAIN:
            if not isinstance(value, _PLAIN[key]):
                raise _refuse(path, f"entry {key!r} has type {type(value).__name__}")
            plain[key] = value
        else:
            raise _refuse(path, f"unexpected entry {key!r}")
    return plain


MAX_UNITS, MAX_LAYERS, MAX_ROLLOUT = 4096, 8, 1 << 16  # far above SB3's defaults (64 x 2; 2,048 x 8 envs)


def _too_big(net_arch: Any, plain: dict[str, Any]) -> str | None:
    """Why the networks or the rollout buffer a file asks for are beyond any agent of ours, checked
    before anything is built (building a policy of [30000, 30000] units took minutes)."""
    branches = [net_arch.get("pi", []), net_arch.get("vf", [])] if isinstance(net_arch, dict) else [net_arch or []]
    if any(
        not isinstance(b, list)
        or len(b) > MAX_LAYERS
        or any(not isinstance(u, int) or not 0 < u <= MAX_UNITS for u in b)
        for b in branches
    ):
        return f"net_arch asks for layers beyond {MAX_LAYERS} of 1..{MAX_UNITS} units"
    if plain.get("n_steps", 1) * plain.get("n_envs", 1) > MAX_ROLLOUT or plain.get("batch_size", 1) > MAX_ROLLOUT:
        return f"a rollout of n_steps x n_envs or a batch beyond {MAX_ROLLOUT} steps"
    return None


def load_ppo(path: str | Path, device: str = "cpu", cls=None):
    """(PPO model, mario_kit record) from an agent file; nothing in the file is unpickled."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import PPO
    from stable_baselines3.common.policies import ActorCriticCnnPolicy

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no agent file at {path}")
    parts = read_parts(path)
    try:
        data = json.loads(parts["data"])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a stable-baselines3 PPO agent (data is not JSON: {e})") from None
    plain = _plain_entries(path, data)
    rec = _check_record(path, plain.get("mario_kit"))
    pk = plain.get("policy_kwargs", {})
    if not set(pk) <= _POLICY_KWARGS or plain.get("rollout_buffer_kwargs"):
        raise _refuse(path, "policy or buffer keyword arguments mario-kit does not rebuild")
    why = _too_big(pk.get("net_arch"), plain)
    if why:
        raise _refuse(path, why)
    if "learning_rate" not in plain:
        raise _refuse(path, "no constant learning rate")

    clip = rec.get("clip_range")
    if not isinstance(clip, _NUM):
        clip = _constant(data.get("clip_range", {}), 0.2)
    rebuilt = {
        "policy_class": ActorCriticCnnPolicy,
        "observation_space": gym.spaces.Box(
            0, 255, (N_STACK, *OBS_SIZE), np.uint8
        ),  # channels first (VecTransposeImage)
        "action_space": gym.spaces.Discrete(len(rec["action_buttons"])),
        "rollout_buffer_class": None,
        "clip_range": float(clip),
        "_last_obs": None,
        "_last_episode_starts": None,
        "ep_info_buffer": None,
        "ep_success_buffer": None,
    }
    policy = _torch_part(path, parts, "policy.pth", device)
    params = {"policy": policy}
    if "policy.optimizer.pth" in parts:
        params["policy.optimizer"] = _torch_part(path, parts, "policy.optimizer.pth", device)
    if "pytorch_variables.pth" in parts and _torch_part(path, parts, "pytorch_variables.pth", device):
        raise _refuse(path, "pytorch_variables.pth is not empty (PPO has none)")

    cls = cls or PPO
    model = cls(policy=ActorCriticCnnPolicy, env=None, device=device, _init_setup_model=False)
    model.__dict__.update(plain | rebuilt)
    try:
        model._setup_model()
        model.set_parameters(params, exact_match="policy.optimizer" in params, device=device)
    except Exception as e:  # noqa: BLE001  (shapes or keys that do not fit the rebuilt policy)
        raise _refuse(
            path, f"weights do not fit a PPO CNN policy ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    return model, rec
