"""`collect --ray`: every episode a Ray task, on one machine or a cluster.

Same episodes: episode i draws everything from `default_rng([seed, i])`, and a `--steps` budget is
spent by the rule of a single worker: episodes are kept in index order, and the first one that would
overrun the budget is recorded again with the steps left as its limit (exactly what one worker does),
so a seed gives the same files on any number of nodes. (A `hash` strategy is the exception: what it
chooses depends on what the others have counted so far.)

Where files go: by default (`write="driver"`) a task records into the worker's temporary folder and
returns the file's bytes through Ray's object store; the driver writes them atomically into `out`
(no shared storage needed). `write="shared"`: tasks write into `out` themselves, which every node
must mount (checked at start with a probe file).

Faults: a task whose worker or node dies is retried by Ray (`max_retries`); the retry is the same
episode and has the same file name (seed, index), so nothing is doubled and nothing is missing. A
killed writer's `.partial` is ignored like any other. Ctrl-C cancels the cluster's tasks and keeps
every finished episode.

`--frontier`: one actor holds the archive (`_ArchiveHub`, seeded with the folder's archive files);
each task hands in the cells its episode found and takes the others' at its end, and the driver
writes the whole archive into the folder as `mario-kit.frontier.json` every ARCHIVE_SAVE_EVERY
episodes and at the end. Which cells a task knows depends on when the others handed theirs in, so a
frontier collection on Ray is not the same episodes as one worker's (nor from run to run).

`hash` balancing: one actor holds the counts (`_HashTable`); each task hands in its counts and takes
the others' at the start and end of its episode (`share=False`: only at the end, each episode
steering by the table as it was when the collection started; bench/ray.py compares the two).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from mario_kit import UserError
from mario_kit.atomic import commit
from mario_kit.collectors.collect import (
    CollectConfig,
    episode_meta,
    episode_rng,
    make_collect_policy,
    pick_level,
)
from mario_kit.collectors.loop import record_episode
from mario_kit.datasets import format as F
from mario_kit.datasets.episode import EpisodeWriter
from mario_kit.emulator import MarioEnv, parse_levels
from mario_kit.interrupt import CtrlC

MAX_RETRIES = 5  # per episode task, when its worker or node dies
ARCHIVE_SAVE_EVERY = 25  # --frontier: kept episodes between writes of the cluster's archive
WRITE_MODES = ("driver", "shared")


def require_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'mario-kit[ray]' (or pip install ray)") from None
    return ray


def episode_name(stamp: str, source: str, level: str, seed: int, index: int) -> str:
    """The file name of episode `index`: the collection's start time and a digest of (seed, index),
    so that a retried task writes the same file, never a second one."""
    return f"{stamp}-{source}-{level}-{xxhash.xxh3_64_hexdigest(f'{seed}:{index}'.encode())}{F.SUFFIX}"


# --- worker side ---------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}  # per worker process: emulators by level, the policy (built once)


class _ActorExchange:
    """`TableExchange` over the `_HashTable` actor; remembers which version it has seen."""

    def __init__(self, actor: Any, share: bool = True) -> None:
        self.actor, self.share, self.version = actor, share, -1

    def exchange(self, delta: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        import ray

        since = self.version if (self.share or self.version < 0) else None
        self.version, (keys, counts) = ray.get(self.actor.exchange.remote(pack(delta), since))
        return unpack(keys, counts)


def pack(table: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Counts as two arrays (keys, counts): a dict of small arrays costs Ray 10x more to move."""
    keys = np.fromiter(table, dtype=np.uint64, count=len(table))
    return keys, (np.stack(list(table.values())) if table else np.zeros((0, 0), np.int64))


def unpack(keys: np.ndarray, counts: np.ndarray) -> dict[int, np.ndarray]:
    return {int(k): c for k, c in zip(keys, counts)}


def _agent_path(data: bytes) -> str:
    """The agent file shipped through the object store, written once per machine."""
    path = Path(tempfile.gettempdir()) / f"mario-kit-agent-{hashlib.sha256(data).hexdigest()[:16]}.zip"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path)


class _ArchiveExchange:
    """A worker's side of the frontier's shared archive: hands in its changes, takes the others' since
    its last call (the whole archive at the first)."""

    def __init__(self, actor: Any) -> None:
        self.actor, self.version = actor, -1

    def __call__(self, change: dict[str, Any]) -> dict[str, Any]:
        import ray

        self.version, theirs = ray.get(self.actor.exchange.remote(change, self.version))
        return theirs


def _policy(cfg: CollectConfig, agent: bytes | None, table: Any, share: bool, archive: Any = None):
    """This worker's policy for the collection, built at its first episode and kept."""
    key = repr(
        (
            cfg.policy,
            cfg.policy_kwargs,
            cfg.balance,
            cfg.balance_kwargs,
            cfg.action_set,
            share,
            None if agent is None else hashlib.sha256(agent).hexdigest(),
            table,
            archive,
        )
    )
    if _WORKER.get("key") != key:
        given = cfg.policy_kwargs.get("model")
        if agent is not None:
            cfg.policy_kwargs = {**cfg.policy_kwargs, "model": _agent_path(agent)}
        table_opt = {"exchange": _ActorExchange(table, share)} if table is not None else {}
        policy = make_collect_policy(cfg, F.get_action_set(cfg.action_set), **table_opt)
        if agent is not None:  # the episode names the agent file the user gave, not this machine's copy
            getattr(policy, "policy", policy).path = str(given)
        if archive is not None:  # the frontier: the cluster's archive, not files in cfg.out
            inner = getattr(policy, "policy", policy)
            inner.folder, inner.exchange = None, _ArchiveExchange(archive)
        _WORKER.update(key=key, policy=policy)
    return _WORKER["policy"]


def _scratch() -> Path:
    """This worker process's folder for episodes on their way to the driver; at its first episode,
    those of dead workers (a cancelled or killed task leaves its .partial) are removed."""
    root = Path(tempfile.gettempdir())
    if "scratch" in _WORKER:
        return _WORKER["scratch"]
    for d in root.glob("mario-kit-ray-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(d, ignore_errors=True)
    folder = _WORKER["scratch"] = root / f"mario-kit-ray-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    return folder


def run_episode(
    cfg: CollectConfig,
    seed: int,
    index: int,
    budget: int | None,
    stamp: str,
    shared: bool,
    agent: bytes | None = None,
    table: Any = None,
    share: bool = True,
    archive: Any = None,
) -> dict[str, Any]:
    """Record episode `index` (a Ray task's body). Returns its name, steps, end and, unless `shared`
    (written into cfg.out), the file's bytes."""
    aset = F.get_action_set(cfg.action_set)
    policy = _policy(cfg, agent, table, share, archive)
    rng = episode_rng(seed, index)
    level = pick_level(rng, parse_levels(cfg.level))
    envs = _WORKER.setdefault("envs", {})
    env = envs.get(level) or envs.setdefault(level, MarioEnv(level))
    name = episode_name(stamp, policy.source, level, seed, index)
    folder = Path(cfg.out) if shared else _scratch()
    try:
        with EpisodeWriter(folder, episode_meta(cfg, policy, aset, seed, index, level), name=name) as writer:
            end = record_episode(
                env, policy, writer, rng, cfg.frame_skip, cfg.max_steps, None, cfg.ending_steps, budget
            )
            path = writer.finish(end)
        inner = getattr(policy, "policy", policy)  # a balancing strategy's, or the policy itself
        for p in [policy] + ([inner] if inner is not policy else []):
            if hasattr(p, "flush"):  # hand the episode's counts (or cells) in before reporting it done
                p.flush()
        import ray

        out = {
            "index": index,
            "name": name,
            "steps": writer.n_steps,
            "end": end,
            "budget": budget,
            "node": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
        }
        if not shared:
            out["data"] = path.read_bytes()
        return out
    finally:
        if not shared:
            for p in folder.iterdir():
                p.unlink()


class _HashTable:
    """The `hash` strategy's counts for the whole cluster (a Ray actor): the base table the
    collection started from plus every count handed in, a version per change."""

    KEEP = 20_000  # versions of change log kept; a caller further behind gets the whole table

    def __init__(self, base: dict[int, np.ndarray]) -> None:
        self.table = {k: np.array(c, np.int64) for k, c in base.items()}
        self.added: dict[int, np.ndarray] = {}
        self.log: list[list[int]] = [list(self.table)]  # log[v - first]: the keys version v changed (0: the base)
        self.first = 0  # the version of log[0]

    def exchange(
        self, packed: tuple[np.ndarray, np.ndarray], since: int | None
    ) -> tuple[int, tuple[np.ndarray, np.ndarray]]:
        """Add the counts `packed` (see `pack`); return the new version and the counts of the keys
        changed after version `since` (-1: all; None: none), packed. The work is in the changes,
        not in the table's size."""
        delta = unpack(*packed)
        if delta:
            for k, c in delta.items():
                self.table[k] = self.table.get(k, 0) + c
                self.added[k] = self.added.get(k, 0) + c
            self.log.append(list(delta))
            if len(self.log) > 2 * self.KEEP:  # bounded memory on a long collection
                self.first += len(self.log) - self.KEEP
                self.log = self.log[-self.KEEP :]
        version = self.first + len(self.log) - 1
        if since is None:
            return version, pack({})
        if since < self.first:
            return version, pack(self.table)
        keys = {k for changed in self.log[since + 1 - self.first :] for k in changed}
        return version, pack({k: self.table[k] for k in keys})

    def counts_added(self) -> tuple[np.ndarray, np.ndarray]:
        return pack(self.added)


class _ArchiveHub:
    """The frontier's archive for the whole cluster (a Ray actor): the folder's archive the collection
    started from plus every change handed in, with a log of the keys each version changed (as
    `_HashTable`), so that a worker takes only what is new to it."""

    KEEP = 20_000  # versions of change log kept; a caller further behind gets the whole archive

    def __init__(self, base: dict[str, Any]) -> None:
        from mario_kit.collectors.frontier import Archive

        self.archive = Archive.from_json(base, base["action_set"], base["frame_skip"])
        self.log: list[set[str]] = [set(self.archive.cells) | set(self.archive.deaths)]
        self.first = 0

    def exchange(self, change: dict[str, Any], since: int) -> tuple[int, dict[str, Any]]:
        """Take in a worker's `change`; return the new version and the cells changed after `since`."""
        from mario_kit.collectors.frontier import Archive

        a = self.archive
        changed = a.merge(Archive.from_json(change, a.action_set, a.frame_skip, "a worker's cells"))
        if changed:
            self.log.append(changed)
            if len(self.log) > 2 * self.KEEP:
                self.first += len(self.log) - self.KEEP
                self.log = self.log[-self.KEEP :]
        version = self.first + len(self.log) - 1
        if since < self.first:
            return version, a.to_json()
        return version, a.to_json(set().union(*self.log[since + 1 - self.first :]))

    def whole(self) -> dict[str, Any]:
        return self.archive.to_json()


# --- driver side ---------------------------------------------------------------------------------
def init_ray(address: str | None):
    """Connect to the cluster at `address` ('auto', HOST:PORT, or RAY_ADDRESS), else start a local one."""
    ray = require_ray()
    if not ray.is_initialized():
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                configure_logging=True,
            )
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UserError(
                f"cannot reach the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: {e}"
            ) from None
    return ray


def preflight(cfg: CollectConfig) -> None:
    """What can fail before the collection starts: Ray missing, a HOST:PORT that does not answer."""
    ray = require_ray()
    if not ray.is_initialized():
        _probe(cfg.ray_address or os.environ.get("RAY_ADDRESS"))


def _probe(address: str | None, timeout: float = 5.0) -> None:
    """A HOST:PORT that does not answer fails here in seconds (Ray itself retries for minutes)."""
    import socket

    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise UserError(f"cannot reach the Ray cluster at {address}: {getattr(e, 'strerror', None) or e}") from None


def check_shared_storage(ray, out: Path, sees=None) -> None:
    """`--ray-write shared`: every alive node must see a probe file written here into `out`
    (`sees(path, token) -> bool` runs on each node; tests pass a blind one)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = out / f".mario-kit-ray-probe-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    probe.write_text(token)
    try:
        see = ray.remote(num_cpus=0)(sees or _sees)
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        refs = [
            see.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(str(probe), token)
            for n in nodes
        ]
        blind = [n[:8] for n, ok in zip(nodes, ray.get(refs)) if not ok]
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise UserError(
            f"--ray-write shared: node(s) {', '.join(blind)} do not see {out}; mount it on every node "
            "or leave --ray-write at driver"
        )


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def write_episode(out: Path, name: str, data: bytes) -> Path:
    """The driver's atomic write of an episode returned by a task (a .partial, fsync, rename)."""
    path = out / name
    tmp = out / F.partial_name(name)
    try:
        tmp.write_bytes(data)
        commit(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return path


class _Driver:
    """Submits episode tasks, keeps the cluster busy, commits results in index order."""

    def __init__(self, ray, cfg: CollectConfig, seed: int, report, write: str, share: bool) -> None:
        self.ray, self.cfg, self.seed, self.report = ray, cfg, seed, report
        self.shared = write == "shared"
        self.stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(run_episode)
        self.inflight: dict[Any, tuple[int, int | None]] = {}
        self.done: dict[int, dict[str, Any]] = {}
        self.next_index = self.committed = self.total = 0
        self.stopping = False
        self.nodes: dict[str, int] = {}  # episodes kept, by the node that recorded them
        self.returned = self.returned_steps = 0  # episodes returned, and their steps (the mean length so far)
        self.cap = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        self.agent = None
        if cfg.policy == "ppo":
            self.agent = ray.put(Path(cfg.policy_kwargs["model"]).read_bytes())  # once, not per task
        self.table = None
        self.share = share
        if cfg.balance == "hash":  # the folder's table (its shards merged by run_collection) seeds the actor
            from mario_kit.balancing.hash import TABLE, load_table

            base, _ = load_table(cfg.out / TABLE)
            self.table = ray.remote(num_cpus=0, max_restarts=0)(_HashTable).remote(base)
        self.archive = None
        if cfg.policy == "frontier":  # the folder's archive files, merged, seed the cluster's
            from mario_kit.collectors.frontier import Archive, take_in_folder

            known = Archive(cfg.action_set, cfg.frame_skip)
            take_in_folder(known, cfg.out)
            self.archive = ray.remote(num_cpus=0, max_restarts=0)(_ArchiveHub).remote(known.to_json())

    def submit(self, index: int, budget: int | None = None) -> None:
        """Episode `index` as a task; `budget`: the steps left, where one worker would cut it there."""
        ref = self.task.remote(
            self.cfg, self.seed, index, budget, self.stamp, self.shared, self.agent, self.table, self.share,
            self.archive,
        )  # fmt: skip
        self.inflight[ref] = (index, budget)

    def run(self, interrupt: CtrlC) -> bool:
        cfg = self.cfg
        while True:
            while (
                not self.stopping
                and len(self.inflight) < self.cap
                and (cfg.episodes is None or self.next_index < cfg.episodes)
                and not self._enough_in_flight()
            ):
                if self.next_index not in cfg.recorded:  # the same command recorded it before: done
                    self.submit(self.next_index)
                self.next_index += 1
            if not self.inflight or interrupt.requested:
                break
            ready, rest = self.ray.wait(list(self.inflight), num_returns=1, timeout=0.5)
            if ready and rest:  # everything else already finished, in one call (thousands in flight on a cluster)
                ready += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                index, _ = self.inflight.pop(ref)
                self.done[index] = self._result(ref, index)
                self.returned += 1
                self.returned_steps += self.done[index]["steps"]
            self._commit()
        self.cancel_all()
        for index in sorted(self.done):  # interrupted: every finished episode is kept
            self._keep(self.done.pop(index))
        return interrupt.requested

    def _enough_in_flight(self) -> bool:
        """--steps: whether the episodes recorded and in flight will likely fill the budget (by the
        mean length so far), so that starting more would mostly be work thrown away."""
        if self.cfg.steps is None or not self.inflight or not self.returned:
            return False
        pending = sum(r["steps"] for r in self.done.values()) + len(self.inflight) * self.returned_steps / self.returned
        return self.total + pending >= self.cfg.steps

    def _result(self, ref, index: int) -> dict[str, Any]:
        """A finished task's result; a task that failed (after Ray's retries) stops the collection,
        a user error (a full disk) in one line."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            self.cancel_all()
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None
            raise RuntimeError(f"episode {index} failed: {cause or e}") from None

    def _commit(self) -> None:
        cfg = self.cfg
        while (self.committed in self.done or self.committed in cfg.recorded) and not (
            cfg.steps is not None and self.total >= cfg.steps
        ):
            if self.committed in cfg.recorded:  # already in the folder: counted, not written again
                self.total += cfg.recorded[self.committed]
                self.committed += 1
                continue
            r = self.done.pop(self.committed)
            if cfg.steps is not None and r["steps"] > cfg.steps - self.total:
                # one worker would have cut this episode at the steps left: record it so, and drop the
                # episodes after it (a policy that is not a function of the seed, hash, may end it
                # sooner: then the collection goes on from the next index)
                self.stopping = True
                self.cancel_all(keep=self.committed)
                self.submit(self.committed, cfg.steps - self.total)
                self.next_index = self.committed + 1
                return
            self._keep(r)
            self.committed += 1
            self.stopping = False
            if cfg.steps is not None and self.total >= cfg.steps:
                self.stopping = True
                self.cancel_all()

    def _keep(self, r: dict[str, Any]) -> None:
        path = self.cfg.out / r["name"] if self.shared else write_episode(self.cfg.out, r["name"], r["data"])
        self.total += r["steps"]
        self.nodes[r["node"]] = self.nodes.get(r["node"], 0) + 1
        if sum(self.nodes.values()) % ARCHIVE_SAVE_EVERY == 0:
            self.save_archive()
        self.report("steps", r["steps"])
        self.report("episode", (str(path), r["steps"]))

    def cancel_all(self, keep: int | None = None) -> None:
        """Cancel the tasks in flight (and drop finished episodes past the budget), except episode `keep`.
        With shared writes, remove the files a cancelled task may have finished."""
        refs = [r for r, (i, _) in self.inflight.items() if i != keep]
        for r in refs:
            self.ray.cancel(r, force=True)
        for r in refs:
            try:
                self.ray.get(r)
            except Exception:  # noqa: BLE001  (cancelled or killed: either way not kept)
                pass
        gone = [self.inflight.pop(r)[0] for r in refs]
        if self.stopping:
            gone += [i for i in list(self.done) if i != keep]
            for i in gone:
                self.done.pop(i, None)
            if self.shared:
                self._remove(gone)

    def _remove(self, indices: list[int]) -> None:
        from mario_kit.collectors.policies import POLICIES

        source = POLICIES[self.cfg.policy].source
        levels = parse_levels(self.cfg.level)
        for i in indices:
            level = pick_level(episode_rng(self.seed, i), levels)
            (self.cfg.out / episode_name(self.stamp, source, level, self.seed, i)).unlink(missing_ok=True)

    def save_archive(self) -> None:
        """The frontier: write the cluster's archive into the folder (a killed driver loses at most
        ARCHIVE_SAVE_EVERY episodes' cells; the episodes themselves are written as they come)."""
        if self.archive is not None:
            from mario_kit.atomic import write_json_atomic
            from mario_kit.collectors.frontier import ARCHIVE

            write_json_atomic(self.cfg.out / ARCHIVE, self.ray.get(self.archive.whole.remote()))

    def finish_table(self) -> None:
        """Add the counts the cluster handed in to the folder's table (as a shard, merged)."""
        if self.table is None:
            return
        from mario_kit.balancing import make_strategy
        from mario_kit.balancing.hash import add_counts
        from mario_kit.collectors.policies import RandomPolicy

        added = unpack(*self.ray.get(self.table.counts_added.remote()))
        strategy: Any = make_strategy(
            "hash", RandomPolicy(), F.get_action_set(self.cfg.action_set), **self.cfg.balance_kwargs
        )
        meta = strategy.meta  # a HashStrategy's: what the shared table is keyed by
        add_counts(self.cfg.out, added, meta)


def collect_on_ray(cfg: CollectConfig, seed: int, report) -> bool:
    """Run the collection's episodes as Ray tasks; returns True when interrupted (Ctrl-C).
    `report('nodes', {node id: episodes})` at the end says where they ran."""
    ray = init_ray(cfg.ray_address)
    cfg.out = Path(cfg.out).resolve()  # workers do not share the driver's working directory
    if cfg.ray_write == "shared":
        check_shared_storage(ray, cfg.out)
    driver = _Driver(ray, cfg, seed, report, cfg.ray_write, cfg.ray_share_table)
    with CtrlC() as interrupt:
        try:
            stopped = driver.run(interrupt)
        finally:
            driver.finish_table()
            driver.save_archive()
            report("nodes", driver.nodes)
    return stopped
