"""`collect --ray` measured (issue 22). Prints JSON; the figures behind docs/SCALE.md.

    .venv/bin/python bench/ray.py [--steps 6000] [--parts local,faults,hash,actor,write]

local   the same collection with `--workers 2` and with `--ray` (a local Ray on this machine's CPUs),
        one after the other in this run: steps/s end to end and without Ray's start-up, their ratio.
faults  a two-node cluster on this machine (ray.cluster_utils.Cluster: a head and a second node of 1
        CPU each): episodes per node; SIGKILL of a worker, then removal of the second node, in the
        middle of a run; the folder must equal a clean `--workers 2` run's, episode for episode.
hash    `hash` p=0.5 on Ray, the table shared through the actor against each episode steering by
        the table as it was at the start (what separate shards would give): action entropy, rarest
        action's share, steps per scenario key (bench/balance.py's measures).
actor   the hash actor alone: exchanges/s from 8 concurrent clients with a 40-key delta each (an
        episode's worth), where it saturates.
write   the driver's atomic episode write (bytes/s) and the bytes per episode in the object store.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# this file is named ray.py: its folder must not shadow the ray package (here or in Ray's workers)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def _measure():
    """bench/balance.py's measures (loaded by path, for the reason above)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_balance", HERE / "balance.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.measure


MK = [sys.executable, "-m", "mario_kit", "collect"]


def cli(args: list[str], **kw) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(MK + args, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {r.stderr[-2000:]}")
    return time.perf_counter() - t, r.stdout


def ray_start_s() -> float:
    """A fresh local Ray: init plus the first task's round trip."""
    code = (
        "import time,ray;t=time.perf_counter();ray.init(include_dashboard=False,log_to_driver=False);"
        "ray.get(ray.remote(lambda:1).remote());print(time.perf_counter()-t)"
    )
    return float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1]
    )


def steady_rate(folder: Path) -> tuple[float, float]:
    """Steps/s between the first and the last episode written (start-up excluded), and the
    seconds from the command's start to the first episode."""
    import h5py

    eps = sorted((p.stat().st_mtime, int(h5py.File(p).attrs["length"])) for p in folder.glob("*.h5"))
    return sum(n for _, n in eps[1:]) / (eps[-1][0] - eps[0][0]), eps[0][0]


def part_local(tmp: Path, steps: int) -> dict:
    """--episodes (as many as --steps gives) and --steps, each with --workers 2 and with --ray."""
    out = {"ray_start_s": round(ray_start_s(), 2)}
    for mode, budget in (("episodes", ["--episodes", str(steps // 180)]), ("steps", ["--steps", str(steps)])):
        base = ["--random", "--sticky", "0.8", *budget, "--max-steps", "400", "--seed", "1", "-q"]
        r = out[mode] = {}
        for name, extra in (("workers2", ["--workers", "2"]), ("ray", ["--ray"])):
            t0 = time.time()
            wall, text = cli(base + ["--out", str(tmp / f"{mode}-{name}")] + extra)
            n = int(text.split(" steps into")[0].split()[-1].replace(",", ""))
            rate, first = steady_rate(tmp / f"{mode}-{name}")
            r[name] = {
                "steps": n,
                "wall_s": round(wall, 2),
                "steps_per_s": round(n / wall, 1),
                "steady_steps_per_s": round(rate, 1),
                "first_episode_s": round(first - t0, 2),
            }
        r["ratio_end_to_end"] = round(r["ray"]["steps_per_s"] / r["workers2"]["steps_per_s"], 3)
        r["ratio_steady"] = round(r["ray"]["steady_steps_per_s"] / r["workers2"]["steady_steps_per_s"], 3)
    return out


def _kill_one_task() -> int | None:
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::run_episode"):
                os.kill(int(d.name), signal.SIGKILL)
                return int(d.name)
        except OSError:
            continue
    return None


def part_faults(tmp: Path) -> dict:
    from ray.cluster_utils import Cluster

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from test_ray import assert_same_episodes

    args = ["--random", "--sticky", "0.8", "--episodes", "24", "--max-steps", "300", "--seed", "5", "-q"]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        _, clean_out = cli(args + ["--out", str(tmp / "both"), "--ray", "--ray-address", cluster.address])
        p = subprocess.Popen(
            MK + args + ["--out", str(tmp / "faults"), "--ray", "--ray-address", cluster.address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while not list((tmp / "faults").glob("*.h5")):
            time.sleep(0.1)
        killed = None
        while killed is None:
            killed = _kill_one_task()
            time.sleep(0.05)
        time.sleep(2)
        cluster.remove_node(second, allow_graceful=False)  # the second node dies mid-run
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise SystemExit(err[-2000:])
    finally:
        cluster.shutdown()
    cli(args + ["--out", str(tmp / "clean"), "--workers", "2"])
    steps = assert_same_episodes(tmp / "faults", tmp / "clean")
    same_as_clean_cluster = assert_same_episodes(tmp / "both", tmp / "clean") == steps
    nodes = lambda text: next(line for line in text.splitlines() if line.startswith("on "))  # noqa: E731
    return {
        "episodes": 24,
        "steps": steps,
        "two_node_run": nodes(clean_out),
        "faults_run": nodes(out),
        "killed_worker_pid": killed,
        "equal_to_clean_run": True,
        "undisturbed_two_node_run_equal": same_as_clean_cluster,
    }


def part_hash(tmp: Path, steps: int) -> dict:
    import ray

    from mario_kit.collectors import CollectConfig, collect

    ray.init(include_dashboard=False, log_to_driver=False)
    out = {"steps": steps}
    try:
        for name, share in (("actor (shared)", True), ("start table only", False)):
            d = tmp / f"hash-{share}"
            t = time.perf_counter()
            collect(
                CollectConfig(
                    out=d,
                    policy="sticky",
                    policy_kwargs={"p": 0.8},
                    steps=steps,
                    max_steps=400,
                    seed=2,
                    balance="hash",
                    balance_kwargs={"p": 0.5},
                    ray=True,
                    ray_share_table=share,
                ),
                progress=False,
            )
            out[name] = {**_measure()(d, 7), "wall_s": round(time.perf_counter() - t, 1)}
    finally:
        ray.shutdown()
    return out


def part_actor() -> dict:
    import ray

    from mario_kit.collectors.distributed import _HashTable, pack

    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        rng = np.random.default_rng(0)
        actor = ray.remote(num_cpus=0)(_HashTable).remote(
            {int(k): np.zeros(7, np.int64) for k in rng.integers(0, 2**63, 5000)}
        )
        keys = rng.integers(0, 2**63, 20000)
        n, clients = 300, 8
        deltas = [pack({int(k): rng.integers(0, 5, 7) for k in rng.choice(keys, 40)}) for _ in range(n)]
        ray.get(actor.exchange.remote(pack({}), -1))
        versions = [0] * clients

        def client(c: int) -> None:
            for d in deltas:
                versions[c], _ = ray.get(actor.exchange.remote(d, versions[c]))

        t = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        dt = time.perf_counter() - t
        size = len(ray.get(actor.exchange.remote(pack({}), -1))[1][0])
    finally:
        ray.shutdown()
    return {
        "exchanges": n * clients,
        "clients": clients,
        "keys_per_delta": 40,
        "table_keys": size,
        "exchanges_per_s": round(n * clients / dt, 1),
    }


def part_write(tmp: Path) -> dict:
    from mario_kit.collectors import CollectConfig, collect
    from mario_kit.collectors.distributed import write_episode

    src = tmp / "src"
    paths = collect(
        CollectConfig(out=src, policy="sticky", policy_kwargs={"p": 0.8}, episodes=4, max_steps=400, seed=9),
        progress=False,
    ).paths
    blobs = [p.read_bytes() for p in paths]
    dst = tmp / "dst"
    dst.mkdir()
    t = time.perf_counter()
    for k in range(10):
        for i, b in enumerate(blobs):
            write_episode(dst, f"e{k}-{i}.h5", b)
    dt = time.perf_counter() - t
    import h5py

    steps = sum(int(h5py.File(p).attrs["length"]) for p in paths)
    total = sum(map(len, blobs))
    return {
        "episodes": len(blobs),
        "steps": steps,
        "bytes_per_step": round(total / steps),
        "bytes_per_episode": round(total / len(blobs)),
        "driver_write_mb_per_s": round(10 * total / dt / 1e6, 1),
        "driver_writes_per_s": round(10 * len(blobs) / dt, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--parts", default="local,faults,hash,actor,write")
    args = ap.parse_args()
    res = {"machine": f"{os.cpu_count()} CPUs", "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for part in args.parts.split(","):
            t = time.perf_counter()
            if part == "local":
                res[part] = part_local(tmp, args.steps)
            elif part == "faults":
                res[part] = part_faults(tmp)
            elif part == "hash":
                res[part] = part_hash(tmp, args.steps)
            elif part == "actor":
                res[part] = part_actor()
            elif part == "write":
                res[part] = part_write(tmp)
            res[part]["part_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
