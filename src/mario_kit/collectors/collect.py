"""`run_collection()`: plan episodes over worker processes (or Ray tasks), run the loop, show one progress bar.

Seeding: episode i of a collection with seed S draws its level and its policy's randomness from
`np.random.default_rng([S, i])`, so an episode is reproduced by (S, i) whatever the worker count.
Ctrl-C: each worker discards the episode it is recording; every finished episode is kept.

Running the same command into the same folder again continues it: every episode records its
collection's key (`collection_key`: the policy, its parameters, balancing, levels, action set, frame
skip, step limits and seed; not the totals or the worker count) and its index, and the episodes of
that key already in the folder are counted as done, not recorded again. Raising --episodes or
--steps adds the episodes after them; another --seed adds other episodes. Interactive players
(human, browser) always add.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue as queue_mod
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mario_kit import UserError
from mario_kit.emulator import DEFAULT_FRAME_SKIP, ROM_MODE, MarioEnv, env_id, parse_levels
from mario_kit.collectors.loop import (
    DEFAULT_ENDING_STEPS,
    MAX_ENDING_STEPS,
    CutEpisode,
    DiscardEpisode,
    StopCollection,
    record_episode,
)
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import check_output_dir
from mario_kit.datasets.episode import EpisodeMeta, EpisodeWriter
from mario_kit.interrupt import CtrlC


@dataclass
class CollectConfig:
    """Everything `mario-kit collect` needs; defaults make a small sticky-random dataset."""

    out: Path
    policy: str = "sticky"  # a key of collectors.POLICIES
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    level: str = "1-1"  # 'W-S', a comma list, or 'random' (one drawn per episode)
    action_set: str = "simple"  # right | simple | complex
    frame_skip: int = DEFAULT_FRAME_SKIP  # emulator frames per recorded step
    max_steps: int = 1000  # steps per episode, up to the game's end, before truncation
    ending_steps: int = DEFAULT_ENDING_STEPS  # steps recorded past a death or the flag (0: stop at its first frame)
    episodes: int | None = None  # stop after this many episodes ...
    steps: int | None = (
        None  # ... or after this many recorded steps in all (an interactive policy: neither, until quit)
    )
    seed: int | None = None  # None: a fresh random seed, printed and stored
    workers: int = 1
    player: str = ""
    balance: str | None = None  # a balancing strategy wrapping the policy: repeat | hash
    balance_kwargs: dict[str, Any] = field(default_factory=dict)
    ray: bool = False  # episodes as Ray tasks (collectors.distributed), on a local Ray or a cluster
    ray_address: str | None = None  # 'auto', HOST:PORT; None: RAY_ADDRESS, else a local instance
    ray_write: str = "driver"  # driver: episodes come back through the object store | shared: tasks write into out
    ray_share_table: bool = (
        True  # hash on Ray: steer by the whole cluster's counts (False: the folder's table and its own)
    )
    recorded: dict[int, int] = field(default_factory=dict)  # set by run_collection: index -> steps of this
    # collection's episodes already in `out` (the same command run before), which are not recorded again
    key: str = ""  # set by run_collection: collection_key, computed once (a Ray task rewrites policy_kwargs)

    def check(self) -> None:
        from mario_kit.collectors.policies import POLICIES

        if self.policy not in POLICIES:
            raise UserError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        interactive = getattr(POLICIES[self.policy], "interactive", False)
        if interactive and (self.steps is not None or self.workers != 1):
            raise UserError(f"--{self.policy} records one player: --steps and --workers do not apply")
        if interactive and self.balance is not None:
            raise UserError(
                f"--balance does not steer a {self.policy} player; balance the data afterwards with `mario-kit balance`"
            )
        if not interactive and (self.episodes is None) == (self.steps is None):
            raise UserError("give exactly one of --episodes N or --steps N")
        if self.episodes is not None and self.episodes < 1:
            raise UserError("--episodes must be >= 1")
        if self.steps is not None and self.steps < 1:
            raise UserError("--steps must be >= 1")
        if not 1 <= self.frame_skip <= F.MAX_FRAME_SKIP:
            raise UserError(f"--frame-skip must be in 1..{F.MAX_FRAME_SKIP}, got {self.frame_skip}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise UserError(f"--seed must be in 0..2**63-1, got {self.seed}")
        if self.max_steps < 1:
            raise UserError(f"--max-steps must be >= 1, got {self.max_steps}")
        if not 0 <= self.ending_steps <= MAX_ENDING_STEPS:
            raise UserError(f"--ending-steps must be in 0..{MAX_ENDING_STEPS}, got {self.ending_steps}")
        if self.ray and (interactive or self.workers != 1):
            raise UserError(
                "--ray runs episodes on every CPU of the cluster: not with --workers or an interactive player"
            )
        if self.ray_write not in ("driver", "shared"):
            raise UserError(f"--ray-write must be driver or shared, got {self.ray_write!r}")
        if not 1 <= self.workers <= 64:
            raise UserError(f"--workers must be in 1..64, got {self.workers}")
        parse_levels(self.level)
        F.get_action_set(self.action_set)
        if self.policy == "sticky":  # cheap policies are built once here to check their parameters
            make_policy(self.policy, self.policy_kwargs)
        if self.balance is not None:
            from mario_kit.balancing import make_strategy
            from mario_kit.collectors.policies import RandomPolicy

            make_strategy(self.balance, RandomPolicy(), F.get_action_set(self.action_set), **self.balance_kwargs)


def make_policy(name: str, kwargs: dict[str, Any]):
    from mario_kit.collectors.policies import POLICIES

    if name not in POLICIES:
        raise UserError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[name](**kwargs)


@dataclass
class CollectResult:
    paths: list[Path]
    steps: int
    seed: int
    interrupted: bool = False
    summary: dict[str, Any] | None = None  # collector-specific session summary
    nodes: dict[str, int] | None = None  # Ray: episodes kept per node id
    already: int = 0  # episodes of this collection the folder held before (the same command run before)


def episode_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def pick_level(rng: np.random.Generator, levels: list[str]) -> str:
    """Episode's level: drawn from its own generator when there are several."""
    return levels[int(rng.integers(len(levels)))] if len(levels) > 1 else levels[0]


def episode_meta(cfg: CollectConfig, policy, aset: F.ActionSet, seed: int, index: int, level: str) -> EpisodeMeta:
    return EpisodeMeta(
        env_id=env_id(level),
        level=level,
        frame_skip=cfg.frame_skip,
        action_set=aset,
        source=policy.source,
        policy=policy.params(),
        seed=seed,
        player=cfg.player,
        rom_mode=ROM_MODE,
        extra={"episode_index": index, "collection": cfg.key or collection_key(cfg, seed)},
    )


def collection_key(cfg: CollectConfig, seed: int) -> str:
    """What makes episode i of a collection the same episode: everything but the totals and the workers."""
    import xxhash

    what = {
        "policy": cfg.policy,
        "policy_kwargs": {k: str(v) for k, v in cfg.policy_kwargs.items()},
        "balance": cfg.balance,
        "balance_kwargs": {k: str(v) for k, v in cfg.balance_kwargs.items()},
        "level": cfg.level,
        "action_set": cfg.action_set,
        "frame_skip": cfg.frame_skip,
        "max_steps": cfg.max_steps,
        "ending_steps": cfg.ending_steps,
        "seed": seed,
    }
    return xxhash.xxh3_64_hexdigest(json.dumps(what, sort_keys=True).encode())


def recorded_episodes(out: Path, key: str) -> dict[int, int]:
    """index -> steps of the episodes of collection `key` in `out` (unreadable files are validate's business)."""
    from mario_kit.datasets.dataset import read_header, scan

    found = {}
    for p in scan(out)[0]:
        try:
            attrs = read_header(p)
            extra = json.loads(attrs.get("extra", "{}"))
        except (OSError, ValueError):
            continue
        if isinstance(extra, dict) and extra.get("collection") == key and isinstance(extra.get("episode_index"), int):
            found[extra["episode_index"]] = int(attrs["length"])
    return found


def make_collect_policy(cfg: CollectConfig, aset: F.ActionSet, **table):
    """The configured policy, wrapped by its balancing strategy; `table` says where a `hash`
    strategy keeps its counts (table_dir=, or exchange= on a cluster)."""
    policy = make_policy(cfg.policy, cfg.policy_kwargs)
    if cfg.balance is None:
        return policy
    from mario_kit.balancing import make_strategy

    return make_strategy(cfg.balance, policy, aset, **cfg.balance_kwargs, **(table if cfg.balance == "hash" else {}))


class _Forward(CtrlC):
    """The parent's SIGINT handler: pass the signal on to every worker (a SIGINT sent to the parent
    alone, as `docker stop` or `Popen.send_signal` do, must stop them too), then stop as CtrlC."""

    def __init__(self, procs) -> None:
        super().__init__()
        self.procs = procs

    def _handler(self, signum, frame) -> None:
        for p in self.procs:
            if p.pid is not None and p.exitcode is None:
                try:
                    os.kill(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        super()._handler(signum, frame)


def run_worker(cfg: CollectConfig, worker: int, seed: int, report) -> bool:
    """Record this worker's share of the collection. `report(kind, value)` receives
    ('steps', n) progress and ('episode', (path, steps)) for each kept episode. Returns True when interrupted."""
    with CtrlC() as interrupt:
        _run_worker(cfg, worker, seed, report, interrupt)
    return interrupt.requested


def _run_worker(cfg: CollectConfig, worker: int, seed: int, report, interrupt: CtrlC) -> None:
    levels = parse_levels(cfg.level)
    aset = F.get_action_set(cfg.action_set)
    policy = make_collect_policy(cfg, aset, table_dir=cfg.out)
    share = getattr(policy, "share", None)
    if share is not None:  # a policy that keeps state per worker (the frontier's archive)
        share(worker, cfg.workers)
    try:
        _episodes(cfg, worker, seed, report, interrupt, levels, aset, policy)
    finally:
        close = getattr(policy, "close", None)
        if close is not None:
            close()


def record_session(cfg: CollectConfig, policy, seed: int, report, interrupt: CtrlC | None = None) -> None:
    """Record episodes with a policy object the caller built and owns (the browser server's
    players: `serve`), through the one loop; `report` as in `run_worker`. Runs until the policy
    stops the collection (StopCollection) or `cfg.episodes` are kept."""
    _episodes(
        cfg,
        0,
        seed,
        report,
        interrupt or CtrlC(install=False),
        parse_levels(cfg.level),
        F.get_action_set(cfg.action_set),
        policy,
    )


def _episodes(cfg: CollectConfig, worker: int, seed: int, report, interrupt: CtrlC, levels, aset, policy) -> None:
    """This worker's episodes: indices worker, worker + workers, ... until its share is done. A policy
    may choose the level (`choose_level(rng, levels)`) and hear how each episode ended
    (`episode_ended(path or None, steps, end)`); the human app does both."""
    envs: dict[str, MarioEnv] = {}
    budget = None
    if cfg.steps is not None:
        budget = cfg.steps // cfg.workers + (1 if worker < cfg.steps % cfg.workers else 0)
    index = worker
    pending = 0
    choose = getattr(policy, "choose_level", None)
    ended = getattr(policy, "episode_ended", None) or (lambda path, n, end: None)

    def on_step(t: int, info: dict) -> None:
        nonlocal pending
        if interrupt.requested:
            raise StopCollection(keep=False)
        pending += 1
        if pending >= 16:
            report("steps", pending)
            pending = 0

    def keep(writer: EpisodeWriter, end: str) -> None:
        path = writer.finish(end)
        report("episode", (str(path), writer.n_steps))
        ended(path, writer.n_steps, end)

    try:
        while not (
            (cfg.episodes is not None and index >= cfg.episodes)
            or (budget is not None and budget <= 0)
            or interrupt.requested
        ):
            if index in cfg.recorded:  # the same command recorded it before: done
                budget = None if budget is None else budget - cfg.recorded[index]
                index += cfg.workers
                continue
            rng = episode_rng(seed, index)
            level = choose(rng, levels) if choose else pick_level(rng, levels)
            env = envs.get(level) or envs.setdefault(level, MarioEnv(level))
            meta = episode_meta(cfg, policy, aset, seed, index, level)
            with EpisodeWriter(cfg.out, meta) as writer:  # any exception (finish's too) discards the .partial
                end: str | None
                try:
                    end = record_episode(
                        env, policy, writer, rng, cfg.frame_skip, cfg.max_steps, on_step, cfg.ending_steps, budget
                    )
                except (DiscardEpisode, CutEpisode) as e:
                    end = "cut" if isinstance(e, CutEpisode) and writer.n_steps > 0 else None
                except StopCollection as stop:
                    if (kept := _kept_end(stop, writer.n_steps)) is not None:
                        keep(writer, kept)
                    else:
                        writer.discard()
                    break
                if end is None:
                    writer.discard()
                    ended(None, 0, "discarded")
                    continue
                keep(writer, end)
            if budget is not None:
                budget -= writer.n_steps
            index += cfg.workers
    finally:
        if pending:
            report("steps", pending)
        for env in envs.values():
            env.close()


def _kept_end(stop: StopCollection, steps: int) -> str | None:
    """How the episode a stop came in is kept: as the game ended it (the stop came during its ending),
    as 'cut' (the player asked to keep it), or not (None)."""
    if stop.end is not None:
        return stop.end
    return "cut" if stop.keep and steps > 0 else None


def _die_with_parent() -> None:
    """Linux: get SIGINT when the parent dies (even by SIGKILL), so that an orphaned worker
    discards its episode and exits instead of collecting on its own."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(cfg: CollectConfig, worker: int, seed: int, q) -> None:
    # SIGINT is ignored but while episodes are recorded (run_worker's handler): one arriving during
    # start-up or exit would print a KeyboardInterrupt traceback from multiprocessing's internals
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    try:  # a process group of its own: Ctrl-C reaches it once, forwarded by the parent (_Forward)
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        stopped = run_worker(cfg, worker, seed, lambda kind, value: q.put((kind, worker, value)))
        q.put(("interrupted" if stopped else "done", worker, None))
    except KeyboardInterrupt:
        q.put(("interrupted", worker, None))
    except UserError as e:  # bad input or a full disk: the parent says it in one line
        q.put(("user-error", worker, str(e)))
    except Exception as e:  # noqa: BLE001  (reported to the parent, which raises)
        q.put(("error", worker, f"{type(e).__name__}: {e}"))


def run_collection(cfg: CollectConfig, progress: bool = True, backend=None) -> CollectResult:
    """Collect episodes into `cfg.out` (created if missing; appended to if compatible) with worker
    processes, or with `backend(cfg, seed, report) -> interrupted` (Ray: `collectors.collect` picks it)."""
    cfg.check()
    cfg.out = Path(cfg.out)
    check_output_dir(cfg.out, cfg.action_set, cfg.frame_skip)
    seed = cfg.seed if cfg.seed is not None else secrets.randbits(31)
    result = CollectResult([], 0, seed)
    from mario_kit.collectors.policies import POLICIES

    cfg.key = collection_key(cfg, seed)
    if cfg.seed is not None and not getattr(POLICIES[cfg.policy], "interactive", False):
        cfg.recorded = recorded_episodes(cfg.out, cfg.key)
        result.already = len(cfg.recorded)
        if _nothing_left(cfg):
            return result
    if cfg.balance == "hash":
        from mario_kit.balancing.hash import merge_shards

        merge_shards(cfg.out)  # counts a killed collection left in shards
    total = cfg.episodes if cfg.episodes is not None else cfg.steps
    from mario_kit.progress import make_progress

    with make_progress(enabled=progress) as bar:
        done = len(cfg.recorded) if cfg.episodes else sum(cfg.recorded.values())
        task = bar.add_task(
            "episodes" if cfg.episodes else "steps", total=total, completed=min(done, total) if total else 0
        )

        def report(kind: str, value) -> None:
            if kind == "steps":  # progress, discarded episodes' steps included
                if cfg.steps is not None:
                    bar.update(task, advance=value)
            elif kind == "episode":  # a kept episode: (path, steps)
                result.paths.append(Path(value[0]))
                result.steps += value[1]
                if cfg.episodes is not None:
                    bar.update(task, advance=1)
            elif kind == "nodes":
                result.nodes = value

        if backend is not None:
            result.interrupted = backend(cfg, seed, report)
        elif cfg.workers == 1:
            result.interrupted = run_worker(cfg, 0, seed, report)
        else:
            result.interrupted = _run_parallel(cfg, seed, report)
    if cfg.balance == "hash":
        merge_shards(cfg.out)
    return result


def _nothing_left(cfg: CollectConfig) -> bool:
    """Whether the episodes already recorded cover the whole command."""
    if cfg.episodes is not None:
        return all(i in cfg.recorded for i in range(cfg.episodes))
    return cfg.steps is not None and sum(cfg.recorded.values()) >= cfg.steps


def _run_parallel(cfg: CollectConfig, seed: int, report) -> bool:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(cfg, w, seed, q), daemon=True) for w in range(cfg.workers)]
    for p in procs:
        p.start()
    running = set(range(cfg.workers))
    errors: list[str] = []
    with _Forward(procs) as interrupt:  # SIGINT is passed on to the workers; we keep draining until they exit
        stopped = _drain(q, procs, running, errors, report)
    for p in procs:
        p.join()
    if errors:
        if all(not e.startswith("worker ") for e in errors):  # user errors (the same one from every worker, often)
            raise UserError(errors[0])
        raise RuntimeError("; ".join(errors))
    return interrupt.requested or stopped


def _drain(q, procs, running: set, errors: list, report) -> bool:
    """Relay worker messages until every worker is done; True when any was interrupted."""
    stopped = False
    while running:
        try:
            kind, w, value = q.get(timeout=0.5)
        except queue_mod.Empty:
            dead = [w for w in running if not procs[w].is_alive()]
            for w in dead:
                if procs[w].exitcode not in (0, None):
                    errors.append(f"worker {w} died with exit code {procs[w].exitcode}")
                    running.discard(w)
            continue
        if kind in ("steps", "episode"):
            report(kind, value)
        else:
            running.discard(w)
            stopped |= kind == "interrupted"
            if kind in ("error", "user-error"):
                errors.append(value if kind == "user-error" else f"worker {w}: {value}")
                for p in procs:
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGINT)
    return stopped
