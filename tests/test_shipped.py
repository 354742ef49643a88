"""The world model that ships with mario-kit: it loads with its checksums verified, refuses a changed
file in one line, beats copy-last on an episode recorded here, and drives DreamEnv() and play."""

import dataclasses
import json
import shutil

import numpy as np
import pygame
import pytest
import torch

from conftest import make_dataset, run_main
from mario_kit import UserError
from mario_kit.datasets.loader import WindowDataset
from mario_kit.datasets.store import build_store
from mario_kit.world_model.model import shipped
from mario_kit.world_model.model.checkpoint import load_model
from mario_kit.world_model.config import from_dict, set_sampler, to_dict
from mario_kit.world_model.training.metrics import pooled_psnr, to_img
from mario_kit.world_model.model.sampler import sample, to_model


def test_the_shipped_model_is_complete_small_and_recorded():
    m = shipped.manifest()
    assert {"denoiser.pt", "spawns.h5"} <= set(m["files"]) and m["bytes"] <= shipped.MAX_BYTES == 25_000_000
    assert sum((shipped.FOLDER / n).stat().st_size for n in m["files"]) == m["bytes"]
    for key in ("recipe", "command", "commit", "config", "evaluation"):
        assert m[key], key
    model, cfg, meta = load_model(shipped.run_folder(), "denoiser")
    assert meta["action_set"] == "simple" and cfg.denoiser.n_context == 4
    ck = torch.load(shipped.FOLDER / "denoiser.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in ck["model"].values() if v.is_floating_point())
    assert json.loads(ck["config"]) == m["config"]  # what model.json says is what play samples with


def test_shipping_with_another_sampler_keeps_the_weights(tmp_path):
    """bench/ship.py --set sampler.KEY=VALUE: the config stored with the weights is the one given."""
    m = shipped.manifest()
    cfg = set_sampler(from_dict(m["config"]), ["sampler.s_cond=0.3"])
    shipped.ship(shipped.FOLDER, shipped.FOLDER / "spawns.h5", tmp_path / "s", {"config": to_dict(cfg)})
    a, acfg, _ = load_model(shipped.FOLDER, "denoiser")
    b, bcfg, _ = load_model(tmp_path / "s", "denoiser")
    assert bcfg.sampler.s_cond == 0.3 and acfg.sampler.s_cond == m["config"]["sampler"]["s_cond"]
    assert dataclasses.replace(bcfg.sampler, s_cond=acfg.sampler.s_cond) == acfg.sampler
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert shipped.manifest(tmp_path / "s")["files"]["denoiser.pt"] != m["files"]["denoiser.pt"]


def test_the_shipped_model_beats_copy_last_on_an_episode_recorded_here(tmp_path):
    """Fresh sticky-random play of 1-1 with a seed nobody trained or tuned on."""
    make_dataset(tmp_path / "eps", episodes=2, max_steps=120, seed=4242)
    build_store(tmp_path / "eps", tmp_path / "s.zarr", progress=False)
    ds = WindowDataset(tmp_path / "s.zarr", split=None)
    model, cfg, _ = load_model(shipped.run_folder(), "denoiser")
    idx = np.flatnonzero(ds.targets - ds.episode_start >= 4)[::4][:48]  # full contexts, spread over the episodes
    b = ds.gather(ds.fetch(idx))
    obs = to_model(torch.from_numpy(b["obs"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        pred = torch.cat(
            [
                sample(
                    model, obs[i : i + 16, :4].flatten(1, 2), torch.from_numpy(b["act"][i : i + 16]), cfg.sampler, gen
                )
                for i in range(0, len(idx), 16)
            ]
        )
    target, last = torch.from_numpy(b["obs"][:, 4]).float(), torch.from_numpy(b["obs"][:, 3]).float()
    model_db, copy_db = pooled_psnr(to_img(pred), target), pooled_psnr(last, target)
    assert model_db > copy_db + 1.0, (model_db, copy_db)


def test_a_changed_shipped_file_is_refused_with_exit_2(tmp_path, monkeypatch):
    copy = tmp_path / "shipped"
    shutil.copytree(shipped.FOLDER, copy)
    data = bytearray((copy / "denoiser.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "denoiser.pt").write_bytes(bytes(data))
    with pytest.raises(UserError, match="denoiser.pt does not match its checksum"):
        shipped.manifest(copy)
    monkeypatch.setattr(shipped, "FOLDER", copy)
    monkeypatch.setenv("MARIO_KIT_KEYS", "escape@1")
    code, _, err = run_main("play", "--no-upsampler")
    assert code == 2 and "does not match its checksum" in err and err.count("\n") == 1 and "Traceback" not in err


def test_dream_env_without_arguments_runs_the_shipped_model():
    from mario_kit.world_model import DreamEnv

    env = DreamEnv(max_steps=10, device="cpu")
    obs, info = env.reset(seed=0)
    assert obs.shape == (240, 256, 3) and "spawn" in info
    rewards, terminated, truncated = [], False, False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(1)  # right
        rewards.append(reward)
    # the shipped reward and end model: rewards in the game's units, predicted, never made up
    assert info["predicted"] and len(rewards) <= 10 and obs.dtype == np.uint8
    assert all(-15.0 <= r <= 15.0 for r in rewards) and any(r != 0.0 for r in rewards)
    assert truncated == (len(rewards) == 10 and not terminated)
    on = DreamEnv(max_steps=10, device="cpu", level="1-2")  # only the spawns on that stage
    assert {on.reset(seed=s)[1]["ref"]["level"] for s in range(8)} == {"1-2"} and len(on.spawns) < len(env.spawns)


def test_play_without_run_or_spawns_plays_the_shipped_model():
    from mario_kit.world_model.programs.play import PlayConfig, play

    keys = {
        0: [pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RIGHT)],
        4: [pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE)],
    }
    r = play(PlayConfig(upsampler=False, sync=True, script=keys, device="cpu"))
    assert r.frames == 4 and r.actions == [1, 1, 1, 1]


def test_the_shipped_model_shows_full_resolution_through_its_tiles(tmp_path, capsys):
    """The shipped model has no diffusion upsampler but a tile upsampler: play, dream and DreamEnv
    show 240x256 frames drawn from tiles, not the 64x60 frame enlarged; without the tiles file,
    play says it shows the frames enlarged."""
    from mario_kit.world_model.model import tiles
    from mario_kit.world_model.model.checkpoint import path_of
    from mario_kit.world_model.programs.play import PlayConfig, play
    from mario_kit.world_model.programs.world_model_env import WorldModelEnv
    from mario_kit.datasets.ops import load_spawns

    assert not path_of(shipped.run_folder(), "upsampler").exists() and tiles.FILE in shipped.manifest()["files"]
    sp = load_spawns(shipped.spawns_file())
    dream = WorldModelEnv(device="cpu")
    assert dream.tiles is not None
    dream.reset(sp.low[0], sp.actions[0])
    low, full = dream.step(1)
    enlarged = np.repeat(np.repeat(low, 4, 0), 4, 1)
    assert full.shape == (240, 256, 3) and np.array_equal(full, dream.tiles(low))
    assert (full != enlarged).mean() > 0.05  # sharper than the blocks: tile edges, the HUD's letters
    bare = tmp_path / "bare"
    shutil.copytree(shipped.FOLDER, bare)
    (bare / tiles.FILE).unlink()
    keys = {0: [pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE)]}
    play(PlayConfig(run=bare, spawns=bare / "spawns.h5", sync=True, script=keys, device="cpu"))
    assert "no upsampler (nor tiles): its 64x60 frames are shown enlarged" in capsys.readouterr().out
