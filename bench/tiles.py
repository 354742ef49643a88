"""The tile upsampler (world_model/model/tiles.py) against nearest and bicubic on held-out real frames:
fit on frames of one dataset, measure PSNR at 256x240 on frames of another (over all and by world), and
the time to upsample one frame (the play path) against bicubic's, in the same run.

    .venv/bin/python bench/tiles.py [--train runs/tiles-data/game/episodes] [--test runs/tiles-data/game-eval/episodes]
        [--frames 6000] [--test-frames 1000] [--predicted 4000] [--seed 0] [--out runs/tiles.h5] [--record]
        [--run RUN --predict-levels 1-1,1-2 --out RUN/tiles.h5] [--ship]
        [--tables FILE] [--against FILE [--figure PNG]]

The tables: the exact 3x3 tier of real frames, then (`--predicted N`) coarse tiers fit on real frames
and N one-step predictions of the model (`--run`, else the shipped one) on frames of `--train` of the
stages it knows (`--predict-levels`, default all 32) paired with the real frames they predicted, then
the real pixel alone; bicubic where none knows a pixel. `--tables` measures a file instead of fitting,
`--against` measures another beside it on the same frames.

The default folders are samples of the frozen whole-game recipe, replayed (bench/data/README.md:
`bench/wm_data.py --root runs/tiles-data --only game --sample 1000 --seed 0 --keep-going`, and
`--only game-eval --sample 300`). Prints JSON; `--record` writes bench/results/tiles.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode
from mario_kit.datasets.store import downsample
from mario_kit.emulator import parse_levels
from mario_kit.world_model.model import tiles
from mario_kit.world_model.programs.world_model_env import WorldModelEnv

PER_EPISODE = 8  # frames drawn from one episode at most, so that many episodes (places) are in the sample


def sample_frames(folder: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to PER_EPISODE random frames from each of randomly ordered episodes, n in all, and the
    world (1-8) each is of."""
    rng = np.random.default_rng(seed)
    paths = Dataset(folder).paths
    out: list[np.ndarray] = []
    worlds: list[int] = []
    for i in rng.permutation(len(paths)):
        with Episode(paths[i]) as ep:
            frames, world = ep.frames[:], int(ep.attrs["level"].split("-")[0])
        out.append(frames[np.sort(rng.choice(len(frames), size=min(len(frames), PER_EPISODE), replace=False))])
        worlds += [world] * len(out[-1])
        if len(worlds) >= n:
            break
    return np.concatenate(out)[:n], np.array(worlds[:n])


def predictions(folder: Path, n: int, seed: int, run: Path | None, levels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Up to n one-step predictions (64x60) of the model from 4 real frames of episodes of `levels`,
    PER_EPISODE an episode at most, and the real full frames they predicted."""
    import torch

    from mario_kit.world_model.model import shipped
    from mario_kit.world_model.model.checkpoint import load_model
    from mario_kit.world_model.model.sampler import sample, to_model, to_uint8

    model, cfg, _ = load_model(run or shipped.run_folder(), "denoiser")
    rng = np.random.default_rng(seed)
    lows, fulls = [], []
    paths = Dataset(folder).paths
    for i in rng.permutation(len(paths)):
        with Episode(paths[i]) as ep:
            if ep.attrs["level"] not in levels or ep.length < 5:
                continue
            frames, actions = ep.frames[:], ep.actions[:]
        low = downsample(frames)
        ts = np.sort(rng.choice(np.arange(4, len(frames)), size=min(len(frames) - 4, PER_EPISODE), replace=False))
        ctx = to_model(torch.from_numpy(np.stack([low[t - 4 : t] for t in ts]))).flatten(1, 2)
        act = torch.from_numpy(np.stack([actions[t - 4 : t] for t in ts])).long()
        with torch.no_grad():
            pred = sample(model, ctx, act, cfg.sampler, torch.Generator().manual_seed(int(i)))
        lows.append(np.stack([to_uint8(x).numpy() for x in pred]))
        fulls.append(frames[ts])
        if sum(map(len, lows)) >= n:
            break
    return np.concatenate(lows)[:n], np.concatenate(fulls)[:n]


def fit_tables(train: np.ndarray, args: argparse.Namespace) -> tuple[tiles.TileUpsampler, int]:
    """The chained tables, and how many predictions they were fit on."""
    low = downsample(train)
    if not args.predicted:
        return tiles.fit(low, train), 0
    levels = parse_levels(args.predict_levels)
    pred_low, pred_full = predictions(args.train, args.predicted, args.seed, args.run, levels)
    both = tiles.fit(
        np.concatenate([low, pred_low]),
        np.concatenate([train, pred_full]),
        tiles.PREDICTED_TIERS,
        tiles.PREDICTED_MIN_COUNT,
    )
    return tiles.fit(low, train, ((1, 1),)).then(both).then(tiles.fit(low, train, ((1, 0),))), len(pred_low)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Pooled over all frames: 10 log10(255^2 / the mean squared error of every pixel)."""
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return round(10 * np.log10(255**2 / mse), 2)


def per_frame_ms(fn, low: np.ndarray, repeat: int = 64) -> float:
    t = time.perf_counter()
    for i in range(repeat):
        fn(low[i % len(low)])
    return round(1000 * (time.perf_counter() - t) / repeat, 2)


def dream_psnr(up: tiles.TileUpsampler, folder: Path, episodes: int, steps: int, run: Path | None) -> dict[str, Any]:
    """The model dreams `steps` frames of 1-1 episodes (from their first 4 frames, with their actions);
    its 64x60 frames upsampled by tiles and by bicubic, each against the real game's frames."""
    dream = WorldModelEnv(run, upsampler=False, device="cpu", seed=0)
    ours, base, real = [], [], []
    for path in Dataset(folder).paths:
        with Episode(path) as ep:
            if ep.attrs["level"] != "1-1" or ep.played_steps < steps + 4 or ep.info["x_pos"][0] > 1500:
                continue
            frames, actions = ep.frames[: steps + 5], ep.actions[: steps + 4]
        dream.reset(downsample(frames[:4]), actions[:4])
        low = np.stack([dream.step(int(actions[t]))[0] for t in range(3, 3 + steps)])
        ours.append(up(low))
        base.append(tiles.bicubic(low))
        real.append(frames[4 : 4 + steps])
        if len(real) == episodes:
            break
    first = [x[:1] for x in real]
    return {
        "dream_frames": sum(map(len, real)),
        "dream_psnr_bicubic": psnr(np.concatenate(base), np.concatenate(real)),
        "dream_psnr_tiles": psnr(np.concatenate(ours), np.concatenate(real)),
        "dream_next_psnr_bicubic": psnr(np.concatenate([x[:1] for x in base]), np.concatenate(first)),
        "dream_next_psnr_tiles": psnr(np.concatenate([x[:1] for x in ours]), np.concatenate(first)),
    }


def play_fps(up: tiles.TileUpsampler, frames: int = 100) -> dict[str, float]:
    """Model frames/s of the shipped model's `WorldModelEnv.step` as `play` runs it on this CPU (1
    sampling step, bf16 where the CPU has it), with the tiles `up` and without (64x60 enlarged), same run."""
    from mario_kit.hardware import fast_bf16
    from mario_kit.world_model.programs.play import CPU_PLAY_STEPS

    out = {}
    for name, with_tiles in (("play_fps_enlarged", False), ("play_fps_tiles", True)):
        dream = WorldModelEnv(upsampler=with_tiles, steps=CPU_PLAY_STEPS, device="cpu", bf16=fast_bf16("cpu"))
        if with_tiles:
            dream.tiles = up
        rng = np.random.default_rng(0)
        dream.reset(rng.integers(0, 256, (4, 60, 64, 3), dtype=np.uint8), np.zeros(4, np.int64))
        dream.step(1)
        t = time.perf_counter()
        for _ in range(frames):
            dream.step(1)
        out[name] = round(frames / (time.perf_counter() - t), 1)
    return out


def main() -> None:
    args = _parse()
    train, _ = sample_frames(args.train, args.frames, args.seed)
    test, worlds = sample_frames(args.test, args.test_frames, args.seed + 1)
    low = downsample(test)
    t = time.perf_counter()
    up, n_predicted = (tiles.load(args.tables), 0) if args.tables else fit_tables(train, args)
    fit_s = round(time.perf_counter() - t, 1)
    r: dict[str, Any] = {
        "train_frames": 0 if args.tables else len(train),
        "predictions": n_predicted,
        "test_frames": len(test),
        "psnr_nearest": psnr(np.repeat(np.repeat(low, 4, 1), 4, 2), test),
    }
    r |= {f"{k}_bicubic": v for k, v in scores(tiles.bicubic(low), test, worlds).items()}
    full, known = up.upsample(low)
    r |= {f"{k}_tiles": v for k, v in scores(full, test, worlds).items()}
    r |= {"known_share": round(known, 4), "known_share_by_world": known_by_world(up, low, worlds)}
    if args.against:
        against = tiles.load(args.against)
        if args.figure:
            figure(args.figure, test, worlds, [tiles.bicubic, against, up])
        against_full, against_known = against.upsample(low)
        r |= {f"{k}_against": v for k, v in scores(against_full, test, worlds).items()}
        r |= {"known_share_against": round(against_known, 4)}
    r |= {
        "entries_per_tier": {f"q{q} r{r_}": len(k) for (q, r_), k in zip(up.tiers, up.keys)},
        "fit_s": fit_s,
        "ms_per_frame_tiles": per_frame_ms(up, low),
        "ms_per_frame_bicubic": per_frame_ms(lambda x: tiles.bicubic(x[None]), low),
    }
    if args.dream_episodes:
        r |= dream_psnr(up, args.test, args.dream_episodes, args.dream_steps, args.run)
    if args.run is None:  # the shipped model with these tables
        r |= play_fps(up)
    if args.out:
        up.save(args.out)
        r["file_bytes"] = args.out.stat().st_size
    print(json.dumps(r, indent=1))
    if args.record:
        _record(r, args)
    if args.ship:
        from mario_kit.world_model.model.shipped import ship_tiles

        fitted = (
            f"{len(train):,} frames of {args.train} (seed {args.seed}), {PER_EPISODE} at most an episode, and "
            f"{r['predictions']:,} one-step predictions of the shipped model on frames of {_levels(args)}"
        )
        ship_tiles(args.out, {"fit_on": fitted, "command": _command(args), "figures": r})


def figure(
    path: Path,
    test: np.ndarray,
    worlds: np.ndarray,
    upsamplers: list[Callable[[np.ndarray], np.ndarray]],
    worlds_shown: tuple[int, ...] = (2, 7, 8),
) -> None:
    """A PNG: for one held-out frame of each world shown, a row of each upsampler's 256x240 frame,
    then the real one."""
    from PIL import Image

    rows = []
    for w in worlds_shown:
        of_world = np.flatnonzero(worlds == w)
        i = int(of_world[min(3, len(of_world) - 1)])
        low = downsample(test[i : i + 1])
        rows.append(np.concatenate([*(np.asarray(up(low)).reshape(test[i].shape) for up in upsamplers), test[i]], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def scores(full: np.ndarray, test: np.ndarray, worlds: np.ndarray) -> dict[str, Any]:
    """Pooled PSNR of upsampled frames against the real ones, over all and by world."""
    by_world = {str(w): psnr(full[worlds == w], test[worlds == w]) for w in np.unique(worlds)}
    return {"psnr": psnr(full, test), "psnr_by_world": by_world}


def known_by_world(up: tiles.TileUpsampler, low: np.ndarray, worlds: np.ndarray) -> dict[str, float]:
    return {str(w): round(up.upsample(low[worlds == w])[1], 4) for w in np.unique(worlds)}


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=Path, default=Path("runs/tiles-data/game/episodes"))
    ap.add_argument("--test", type=Path, default=Path("runs/tiles-data/game-eval/episodes"))
    ap.add_argument("--frames", type=int, default=6000, help="training frames")
    ap.add_argument("--test-frames", type=int, default=1000)
    ap.add_argument("--predicted", type=int, default=4000, help="the model's predictions to fit on (0: none)")
    ap.add_argument("--run", type=Path, help="the model whose frames the tables are for (default: the shipped one)")
    ap.add_argument("--predict-levels", default="random", help="stages to predict frames of (W-S list, or random: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tables", type=Path, help="measure this tiles file instead of fitting one")
    ap.add_argument("--against", type=Path, help="a tiles file to measure beside, on the same test frames")
    ap.add_argument(
        "--figure", type=Path, help="with --against: a PNG of worlds 2, 7, 8 (bicubic, against, these, real)"
    )
    ap.add_argument("--out", type=Path, help="write the fitted tables here (a tiles file)")
    ap.add_argument("--record", action="store_true", help="write bench/results/tiles.json")
    ap.add_argument("--ship", action="store_true", help="put the fitted tables into the shipped model (with --out)")
    ap.add_argument("--dream-episodes", type=int, default=8, help="1-1 test episodes the shipped model dreams")
    ap.add_argument("--dream-steps", type=int, default=32, help="steps of each dream, from 4 real frames")
    args = ap.parse_args()
    if args.ship and (args.run or not args.out or args.tables):
        ap.error("--ship puts tables fit for the shipped model into it: with --out, without --run or --tables")
    if args.figure and not args.against:
        ap.error("--figure draws these tables beside --against's: give both")
    return args


def _command(args: argparse.Namespace) -> str:
    return (
        f".venv/bin/python bench/tiles.py --train {args.train} --test {args.test} --frames {args.frames} "
        f"--test-frames {args.test_frames} --predicted {args.predicted} --predict-levels {args.predict_levels} "
        f"--seed {args.seed}" + (f" --against {args.against}" if args.against else "")
    )


def _levels(args: argparse.Namespace) -> str:
    return "all 32 stages" if args.predict_levels == "random" else args.predict_levels


def _record(r: dict[str, Any], args: argparse.Namespace) -> None:
    from tables import record

    def by_world(key: str) -> str:
        return " / ".join(str(v) for v in r[key].values())

    dream = r.get("dream_frames")
    rows = [
        ["nearest (each pixel 4x4)", r["psnr_nearest"], "", "", "", "", ""],
        ["bicubic", r["psnr_bicubic"], by_world("psnr_by_world_bicubic"),
         f"{r['dream_next_psnr_bicubic']} / {r['dream_psnr_bicubic']}" if dream else "", "", r["ms_per_frame_bicubic"], ""],
    ]  # fmt: skip
    if args.against:
        rows.append([f"tiles before ({args.against})", r["psnr_against"], by_world("psnr_by_world_against"), "",
                     f"{100 * r['known_share_against']:.1f} %", "", ""])  # fmt: skip
    rows.append(
        ["**tiles**", f"**{r['psnr_tiles']}**", by_world("psnr_by_world_tiles"),
         f"{r['dream_next_psnr_tiles']} / {r['dream_psnr_tiles']}" if dream else "",
         f"{100 * r['known_share']:.1f} %", r["ms_per_frame_tiles"],
         f"{r['play_fps_tiles']} ({r['play_fps_tiles'] / r['play_fps_enlarged']:.2f} of {r['play_fps_enlarged']} enlarged)"
         if "play_fps_tiles" in r else ""]
    )  # fmt: skip
    worlds = ", ".join(r["psnr_by_world_tiles"])
    cols = ["upsampler", "real 64x60 frames: PSNR at 256x240 (dB)", f"by world ({worlds})",
            f"the shipped model's dream, 1 step / {args.dream_steps} steps (dB)", "real pixels a tier knew",
            "ms a frame (1 core)", "play: the shipped model's frames/s"]  # fmt: skip
    headline = f"tiles: {r['psnr_tiles'] - r['psnr_bicubic']:+.1f} dB over bicubic on held-out real frames"
    command = _command(args) + " --record"
    note = (
        f"fit on {r['train_frames']:,} frames of {args.train} and {r['predictions']:,} one-step predictions of the "
        f"shipped model on frames of {_levels(args)}, tested on {r['test_frames']} of {args.test}; the dream: "
        f"{r.get('dream_frames', 0) // args.dream_steps} of its 1-1 episodes from x < 1,500, 4 real frames then their actions"
    )
    record("tiles", cols, rows, command, headline, note)


if __name__ == "__main__":
    main()
