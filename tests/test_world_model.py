"""World model on the CPU with tiny configs: shapes, EDM identities, overfitting, exact resume,
DDP with 2 gloo processes, refusing bad checkpoints."""

import csv
import json
from pathlib import Path
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import make_store, run_cli, run_here
from mario_kit.datasets.episode import Episode
from mario_kit.datasets.loader import WindowDataset
from mario_kit.world_model.training.presets import get_config
from mario_kit import UserError
from mario_kit.world_model.config import ModelConfig, NoiseConfig, SamplerConfig, from_dict, to_dict, upsampler_model
from mario_kit.world_model.model.denoiser import Denoiser, count_parameters
from mario_kit.world_model.training.loss import _loss_one, denoiser_loss, sample_sigma, upsampler_loss
from mario_kit.world_model.training.metrics import pooled_psnr, psnr, ssim
from mario_kit.world_model.model.sampler import karras_sigmas, sample, to_model, to_uint8, upsample
from mario_kit.world_model.training.trainer import _load_adding_levels, ema_update, lr_factor, plan_steps, setup_runtime


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("wm"), episodes=6, seed=2)


def test_metrics_equal_scikit_image_on_real_frames(store):
    """Our torch PSNR and SSIM (one home: world_model/metrics.py) against scikit-image's, on pairs of
    real consecutive frames at both resolutions and on a frame against a noisy copy of itself."""
    import zarr
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    g = zarr.open_group(str(store), mode="r")
    rng = np.random.default_rng(0)
    for name in ("low", "full"):
        frames = g[name][10:16]
        noisy = np.clip(frames[:1].astype(int) + rng.integers(-20, 21, frames[:1].shape), 0, 255).astype(np.uint8)
        a, b = np.concatenate([frames[:-1], noisy]), np.concatenate([frames[1:], frames[:1]])
        ours_p = psnr(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()
        ours_s = ssim(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()
        for k in range(len(a)):
            if (a[k] == b[k]).all():
                assert np.isinf(ours_p[k])
                continue
            ref_p = peak_signal_noise_ratio(b[k], a[k], data_range=255)
            ref_s = structural_similarity(
                a[k],
                b[k],
                data_range=255,
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            assert abs(ours_p[k] - ref_p) < 1e-3 and abs(ours_s[k] - ref_s) < 1e-4, (
                name,
                k,
                ours_p[k],
                ref_p,
                ours_s[k],
                ref_s,
            )
        assert ours_s[-1] < 0.999  # the noisy copy is scored below identical
    t = torch.from_numpy(np.stack([a[0], a[0]])).float()
    assert pooled_psnr(t, t + 1) == pytest.approx(10 * np.log10(255.0**2))  # MSE of 1 everywhere


def test_pooled_gap_interval_is_exact_when_every_rollout_agrees_and_widens_when_they_do_not():
    from mario_kit.world_model.training.metrics import pooled_gap_interval

    real = torch.zeros(16, 6, 8, 3)
    base, pred = real + 20, real + 10  # every rollout: a quarter of copy-last's squared error
    lo, hi = pooled_gap_interval(pred, base, real)
    assert lo == pytest.approx(10 * np.log10(4)) and hi == pytest.approx(10 * np.log10(4))
    pred = real + torch.arange(1.0, 17.0)[:, None, None, None] * 2  # errors 2..32: pooled lead 10 log10(400 / 374)
    gap = pooled_psnr(pred, real) - pooled_psnr(base, real)
    assert gap == pytest.approx(10 * np.log10(400 / 374), abs=1e-4)
    lo, hi = pooled_gap_interval(pred, base, real)
    assert lo < gap < hi and hi - lo > 1  # 16 rollouts this uneven leave the lead unsure by more than 1 dB
    assert pooled_gap_interval(pred, base, real) == (lo, hi)  # seeded: the same interval every time
    lo4, hi4 = pooled_gap_interval(pred[:4], base[:4], real[:4])
    assert hi4 - lo4 > hi - lo  # fewer rollouts, wider


def test_default_configs_shapes_and_parameter_counts():
    den = Denoiser(ModelConfig(), n_actions=7)
    assert count_parameters(den) == 4_406_147  # DIAMOND's own code gives the same for this config
    up = Denoiser(upsampler_model(), n_actions=7)
    assert 45e6 < count_parameters(up) < 55e6  # 51,147,459
    x = torch.randn(2, 3, 60, 64)
    out = den(x, torch.ones(2), torch.randn(2, 12, 60, 64), torch.randint(0, 7, (2, 4)))
    assert out.shape == (2, 3, 60, 64) and out.abs().max() <= 1
    tiny = get_config("tiny")
    u = Denoiser(tiny.upsampler, 7)
    hi = sample(u, torch.rand(1, 3, 240, 256) * 2 - 1, None, SamplerConfig(steps=1))
    assert hi.shape == (1, 3, 240, 256)


def test_edm_preconditioning_identities():
    m = Denoiser(ModelConfig(sigma_offset_noise=0.0, channels=[8] * 4, depths=[1] * 4, cond_channels=8), 7)
    sigma = torch.tensor([1e-4, 0.1, 0.5, 1.0, 5.0, 20.0])
    c_in, c_skip, c_out, c_noise = (t.flatten() for t in m.conditioners(sigma))
    sd = 0.5
    assert torch.allclose(c_skip + c_out**2 / sd**2, torch.ones(6))  # unit variance of the target mix
    assert torch.allclose(c_in**2 * (sigma**2 + sd**2), torch.ones(6))  # unit variance of the input
    assert torch.allclose(c_noise, sigma.log() / 4)
    assert c_skip[0] > 0.9999 and c_out[0] < 1e-3  # tiny noise: D(x) ~ x
    s = karras_sigmas(3, 2e-3, 5.0, 7.0)
    assert torch.allclose(s, torch.tensor([5.0, s[1].item(), 2e-3, 0.0])) and s[0] > s[1] > s[2]
    # with sigma_offset the effective noise level is sqrt(sigma^2 + offset^2)
    m2 = Denoiser(ModelConfig(sigma_offset_noise=0.3, channels=[8] * 4, depths=[1] * 4, cond_channels=8), 7)
    assert torch.allclose(m2.conditioners(torch.tensor([0.4]))[3], torch.tensor([0.5]).log() / 4)


def test_context_noise_has_its_own_level():
    """Training noise on context frames is drawn from (cond_loc, cond_scale): DIAMOND's target
    distribution by default, the cpu preset's much lower one (median 0.05) when set; the cpu preset's
    target noise sits at the 1-step sampler's sigma (median e^1.6, about 5)."""
    gen = torch.Generator().manual_seed(0)
    default, low = NoiseConfig(), get_config("cpu").noise
    med = lambda n, ctx: sample_sigma(n, 20000, gen, "cpu", context=ctx).median().item()  # noqa: E731
    assert abs(med(default, True) - np.exp(-0.4)) < 0.03 and abs(med(default, False) - np.exp(-0.4)) < 0.03
    assert abs(med(low, True) - np.exp(-3.0)) < 0.005 and abs(med(low, False) - np.exp(1.6)) < 0.15


def test_horizon_loss_feeds_each_target_the_models_denoising_of_the_one_before():
    """horizon 2: the loss is the mean of the first target's loss on real context and the second's on
    a context whose last frame is the model's (detached) denoising of the first, noise drawn in turn."""
    torch.manual_seed(0)  # the model and the frames: not whatever the tests before left in torch's generator
    m = Denoiser(ModelConfig(channels=[8] * 4, depths=[1] * 4, cond_channels=8), 7)
    torch.nn.init.normal_(m.inner.conv_out.weight, std=0.1)
    n, noise = 4, NoiseConfig()
    frames, act, mask = torch.rand(2, n + 2, 3, 60, 64) * 2 - 1, torch.randint(0, 7, (2, n + 1)), torch.ones(2, n + 2)
    loss = denoiser_loss(m, noise, frames, act, mask, torch.Generator().manual_seed(5)).item()
    g = torch.Generator().manual_seed(5)
    first, denoised = _loss_one(m, noise, frames[:, n], frames[:, :n].flatten(1, 2), act[:, :n], mask[:, n], g, True)
    own = frames.clone()
    own[:, n] = denoised
    second, _ = _loss_one(
        m, noise, own[:, n + 1], own[:, 1 : n + 1].flatten(1, 2), act[:, 1 : n + 1], mask[:, n + 1], g, True
    )
    assert loss == pytest.approx((first.item() + second.item()) / 2, rel=1e-5)
    g = torch.Generator().manual_seed(5)
    _loss_one(m, noise, frames[:, n], frames[:, :n].flatten(1, 2), act[:, :n], mask[:, n], g, True)
    real, _ = _loss_one(
        m, noise, frames[:, n + 1], frames[:, 1 : n + 1].flatten(1, 2), act[:, 1 : n + 1], mask[:, n + 1], g, True
    )
    assert (denoised - frames[:, n]).abs().mean() > 0.05  # the model's frame is not the real one
    assert abs(real.item() - second.item()) > 1e-4  # and the second target's loss saw it (seed 0: 0.0026)


def test_a_run_of_the_layout_before_noise_config_loads_and_samples_the_same(tmp_path):
    """Checkpoints and run configs written before the inner network and the training noise had their
    own homes (flat weight names, loc/scale/... in each ModelConfig) load unchanged; a lost experiment
    switched on is refused, and `--set denoiser.loc=...` says where the setting went."""
    m = Denoiser(ModelConfig(channels=[8] * 4, depths=[1] * 4, cond_channels=8), 7)
    torch.nn.init.normal_(m.inner.conv_out.weight, std=0.1)
    old_state = {k.removeprefix("inner."): v for k, v in m.state_dict().items()}
    again = Denoiser(m.cfg, 7)
    again.load_state_dict(old_state)
    ctx, act = torch.randn(1, 12, 60, 64), torch.randint(0, 7, (1, 4))
    draw = lambda d: sample(d, ctx, act, SamplerConfig(), torch.Generator().manual_seed(1))  # noqa: E731
    assert torch.equal(draw(m), draw(again))
    old = to_dict(get_config("cpu"))
    for model, noise in (("denoiser", "noise"), ("upsampler", "upsampler_noise")):
        moved = old.pop(noise)
        old[model].update(
            {
                "loc": moved["loc"],
                "scale": moved["scale"],
                "cond_loc": moved["cond_loc"],
                "cond_scale": moved["cond_scale"],
                "sigma_min_train": moved["sigma_min"],
                "sigma_max_train": moved["sigma_max"],
                "noise_previous_obs": moved["noise_previous_obs"],
                "self_ctx": 0.0,
                "changed_weight": 0.0,
            }
        )
    assert from_dict(old) == get_config("cpu")
    old["denoiser"]["self_ctx"] = 0.25
    with pytest.raises(ValueError, match="self_ctx"):
        from_dict(old)
    with pytest.raises(UserError, match=r"moved: noise\.cond_loc"):
        get_config("cpu", ["denoiser.cond_loc=-2"])


def test_sampling_from_given_noise_is_the_drawn_sample():
    """`noise=` (what a CUDA graph needs: no draw, no host sync inside) starts where the generator would."""
    m = Denoiser(ModelConfig(channels=[8] * 4, depths=[1] * 4, cond_channels=8), 7)
    torch.nn.init.normal_(m.inner.conv_out.weight, std=0.1)  # a network that does something
    ctx, act = torch.randn(2, 12, 60, 64), torch.randint(0, 7, (2, 4))
    out = {}
    for order in (1, 2):
        cfg = SamplerConfig(steps=3, order=order)
        out[order] = sample(m, ctx, act, cfg, torch.Generator().manual_seed(3))
        given = sample(m, ctx, act, cfg, noise=torch.randn(2, 3, 60, 64, generator=torch.Generator().manual_seed(3)))
        assert torch.equal(out[order], given)
    assert (out[1] - out[2]).abs().max() > 1e-3  # Heun is not Euler


def test_device_cuda_means_this_ranks_gpu(monkeypatch):
    """`--set device=cuda` once crashed in torch.cuda.set_device (it needs an index)."""
    seen = []
    monkeypatch.setattr(torch.cuda, "set_device", seen.append)
    monkeypatch.setenv("LOCAL_RANK", "1")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        rt = setup_runtime(get_config("tiny", ["device=cuda"]))
    finally:  # setup_runtime turns TF32 on for CUDA
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert seen == [torch.device("cuda", 1)] and rt.device == torch.device("cuda", 1)
    assert rt.bf16 and rt.channels_last and rt.compile  # "auto" on CUDA


def test_overfitting_a_few_windows(store):
    torch.manual_seed(0)
    cfg = get_config("tiny")
    ds = WindowDataset(store, None)
    b = ds.gather(ds.fetch(np.arange(0, len(ds), max(1, len(ds) // 4))[:4]))
    frames, act, mask = to_model(torch.from_numpy(b["obs"])), torch.from_numpy(b["act"]), torch.from_numpy(b["mask"])
    model = Denoiser(cfg.denoiser, ds.n_actions)
    gen = torch.Generator().manual_seed(0)
    target = torch.from_numpy(b["obs"][:, -1]).float()

    def quality():
        out = sample(model, frames[:, :4].flatten(1, 2), act, SamplerConfig(steps=3), torch.Generator().manual_seed(1))
        return psnr(to_uint8(out).float(), target).mean().item()

    def fixed_loss():  # the same 32 noise draws each time: the loss without training-noise variance
        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return float(np.mean([denoiser_loss(model, cfg.noise, frames, act, mask, g).item() for _ in range(32)]))

    before, loss0 = quality(), fixed_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):  # seed 0: loss x0.32 and +8.9 dB here (x0.25 and +9.5 after 200)
        loss = denoiser_loss(model, cfg.noise, frames, act, mask, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1 = fixed_loss()
    print(f"fixed-noise loss {loss0:.4f} -> {loss1:.4f}")
    assert loss1 < 0.4 * loss0, (loss0, loss1)
    after = quality()
    print(f"PSNR {before:.2f} -> {after:.2f}")
    assert after > before + 5, (before, after)


def test_residual_upsampler_starts_at_bicubic_and_learns_beyond_it(store):
    """The residual upsampler (cpu and tiny presets): untrained it returns the bicubic frame; a few
    dozen steps on four frames take it above bicubic, while DIAMOND's parametrisation starts grey."""
    from mario_kit.world_model.model.denoiser import bicubic

    torch.manual_seed(0)
    ds = WindowDataset(store, None, full_res=True)
    b = ds.gather(ds.fetch(np.arange(len(ds))))
    # aligned crops of the bottom rows (ground, blocks: edges bicubic blurs): 16x16 low-res -> 64x64;
    # the four with the most detail (bicubic's largest error), chosen by content: the store's episode
    # order varies between runs, and a fixed stride once picked flat crops that left little to learn
    all_full = torch.from_numpy(np.ascontiguousarray(b["full"][:, :, 176:240, 64:128]))
    all_low = to_model(torch.from_numpy(np.ascontiguousarray(b["obs"][:, -1, 44:60, 16:32])))
    err = (to_uint8(bicubic(all_low, 4)).float() - all_full[:, 0].float()).pow(2).mean((1, 2, 3))
    pick = torch.argsort(err, descending=True, stable=True)[:4]
    full_crop, low = all_full[pick], all_low[pick]
    full = to_model(full_crop)
    target = full_crop[:, 0].float()
    cfg = get_config("tiny").upsampler
    assert cfg.residual
    model, plain = Denoiser(cfg, ds.n_actions), Denoiser(ModelConfig(**{**vars(cfg), "residual": False}), ds.n_actions)
    scfg = SamplerConfig(steps=1, sigma_max=5.0, s_cond=0.0)
    q = lambda m: psnr(to_uint8(upsample(m, low, scfg, torch.Generator().manual_seed(1))).float(), target).mean().item()  # noqa: E731
    bic = psnr(to_uint8(bicubic(low, 4)).float(), target).mean().item()
    before, grey = q(model), q(plain)
    assert abs(before - bic) < 0.5 and grey < bic - 3, (before, bic, grey)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    mask = torch.ones(4, 1, dtype=torch.bool)
    for _ in range(60):
        loss = upsampler_loss(model, get_config("tiny").upsampler_noise, full, low, mask, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = q(model)
    print(f"bicubic {bic:.2f}, residual upsampler {before:.2f} -> {after:.2f}, plain untrained {grey:.2f}")
    assert after > bic + 0.5, (bic, after)


def _losses(run):
    with open(run / "log.csv") as f:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(f) if not r["test_loss"]}


def test_resume_reproduces_the_uninterrupted_run(tmp_path, store):
    args = ["--store", store, "--config", "tiny", "--set", "epochs=2", "--set", "log_every=1", "-q"]
    full = run_cli("train", "--out", tmp_path / "full", *args)
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "mario_kit", "train", "--out", str(tmp_path / "cut"), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.time()
    while not (tmp_path / "cut" / "log.csv").exists() or len(_losses(tmp_path / "cut")) < 8:
        assert time.time() - t0 < 120 and proc.poll() is None, (
            proc.stderr.read() if proc.poll() is not None else "timeout"
        )
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    printed, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    # the summary of a run stopped inside its first epoch still has its loss and speed
    assert "train loss" in printed and "train loss nan" not in printed and " 0 samples/s" not in printed, printed
    stopped_at = torch.load(tmp_path / "cut" / "denoiser.pt", weights_only=True)["step"]
    assert 8 <= stopped_at < 40  # cut inside the first of two 20-step epochs, or early in the second
    res = run_cli("train", "--out", tmp_path / "cut", "--resume", *args)
    assert res.returncode == 0, res.stderr
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert sorted(a) == sorted(b) == list(range(1, 41))
    assert all(a[s] == b[s] for s in a), [(s, a[s], b[s]) for s in a if a[s] != b[s]][:3]


def test_ctrl_c_under_torchrun_stops_every_rank_at_one_step_and_saves(tmp_path, store):
    """Ctrl-C in a terminal signals torchrun and every rank (one process group; torchrun passes it on
    too): the ranks agree on a step, rank 0 saves a checkpoint there, and the run resumes on two ranks
    whose replicas end identical, rank 0 alone reporting."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    args = ["--store", str(store), *"--config tiny --set epochs=1000 --set threads=1 --set log_every=1 -q".split()]
    two_ranks = [torchrun, "--nproc-per-node", "2", "--master-port"]
    proc = subprocess.Popen(
        [*two_ranks, "29534", "-m", "mario_kit", "train", "--out", str(tmp_path / "r"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    t0 = time.time()
    while not (tmp_path / "r" / "log.csv").exists() or len(_losses(tmp_path / "r")) < 4:
        assert time.time() - t0 < 180 and proc.poll() is None, (
            proc.stderr.read() if proc.poll() is not None else "timeout"
        )
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
    printed, err = proc.communicate(timeout=120)
    # torchrun itself reports the signal (its own SignalException, exit 1); the ranks stop cleanly
    assert "Connection closed by peer" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "interrupted: checkpoint saved" in printed, printed + err[-3000:]
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["interrupted"] is True and s["stages"]["denoiser"]["interrupted"] is True
    stopped_at = torch.load(tmp_path / "r" / "denoiser.pt", weights_only=True)["step"]
    assert stopped_at == s["stages"]["denoiser"]["step"] >= 4
    res = subprocess.run(
        [*two_ranks, "29535", "-m", "mario_kit", "train", "--out", str(tmp_path / "r"), "--resume", *args]
        + ["--set", f"max_steps={stopped_at + 2}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    s = json.loads((tmp_path / "r" / "summary.json").read_text())["stages"]["denoiser"]
    assert s["step"] == stopped_at + 2 and s["world_size"] == 2 and s["ddp_replicas_identical"] is True
    assert res.stdout.count("run: ") == 1  # rank 0 reports, rank 1 is silent


def test_bad_checkpoints_are_refused(tmp_path, store):
    res = run_here("train", "--store", store, "--out", tmp_path / "r", "--config", "tiny", "--set", "max_steps=2", "-q")
    assert res.returncode == 0, res.stderr
    assert (
        run_here("train", "--store", store, "--out", tmp_path / "r", "--config", "tiny", "-q").returncode == 2
    )  # exists
    ck = tmp_path / "r" / "denoiser.pt"
    ck.write_bytes(b"not a checkpoint")
    res = run_here("evaluate", tmp_path / "r", "--store", store)
    assert res.returncode == 2 and "not a readable mario-kit checkpoint" in res.stderr and "Traceback" not in res.stderr
    torch.save(torch.nn.Linear(2, 2), ck)  # a pickled module: weights_only loading refuses it
    res = run_here("evaluate", tmp_path / "r", "--store", store)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    torch.save({"kind": "something-else"}, ck)
    assert run_here("evaluate", tmp_path / "r", "--store", store).returncode == 2
    for bad in (["--set", "nope=1"], ["--set", "lr=fast"], ["--config", "huge"]):
        res = run_here("train", "--store", store, "--out", tmp_path / "x", "--config", "tiny", *bad)
        assert res.returncode == 2 and res.stderr.startswith("error:")


def test_train_both_stages_and_evaluate(tmp_path, store):
    tiny_both = "--config tiny --set stage=both --set max_steps=4 --set ema=0.9 -q".split()
    res = run_here("train", "--store", store, "--out", tmp_path / "r", *tiny_both)
    assert res.returncode == 0, res.stderr
    res = run_here("evaluate", tmp_path / "r", "--store", store, *"--windows 8 --rollouts 2 --horizons 1,8".split())
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "r" / "eval" / "evaluation.json").read_text())
    assert r["next_frame_low_res"]["windows"] == 8 and "next_frame_full_res" in r
    assert r["upsampler_alone"]["windows"] == 8 and r["upsampler_alone"]["bicubic"]["psnr"] > 15
    assert r["next_frame_low_res"]["copy_last"]["psnr"]["mean"] > 10
    assert "rollout_8" in r and (tmp_path / "r" / "eval" / "rollout_psnr.png").exists()
    assert 5 < r["rollout_8"]["scroll_oracle_psnr_last"] < 100 and r["rollout_1"]["scroll_oracle_psnr_last"] > 5
    r8 = r["rollout_8"]
    assert r8["model_gap_last"] == pytest.approx(r8["model_psnr_last"] - r8["copy_last_psnr_last"], abs=2e-3)
    lo, hi = r8["model_gap_last_ci90"]
    assert lo - 2e-3 <= r8["model_gap_last"] <= hi + 2e-3
    assert "lead over" in res.stdout  # the table row (rich wraps the rest of the label at 80 columns)
    _check_by_place(r["by_place"], store)
    assert "1-1 x 0-511" in res.stdout, res.stdout  # the by-place rows of the table
    assert r["upsampler_sampler"]["steps"] == 1  # the tiny preset's
    # the samplers are chosen at evaluation: --set overrides them for this evaluation alone
    samplers = "--set sampler.s_cond=0.5 --set sampler.steps=1 --set upsampler_sampler.steps=2".split()
    small = "--windows 8 --rollouts 2 --horizons 1".split()
    res = run_here("evaluate", tmp_path / "r", "--store", store, *small, "--out", tmp_path / "s", *samplers)
    assert res.returncode == 0, res.stderr
    s = json.loads((tmp_path / "s" / "evaluation.json").read_text())
    assert s["sampler"]["s_cond"] == 0.5 and s["upsampler_sampler"]["steps"] == 2 and r["sampler"]["s_cond"] == 0.005
    # s_cond alone moves a 4-step model's figures by ~0.001 dB, the JSON's rounding; 1 step instead of 3 by far more
    assert s["sampler"]["steps"] == 1 and r["sampler"]["steps"] == 3
    assert s["next_frame_low_res"]["model"] != r["next_frame_low_res"]["model"]
    assert s["next_frame_low_res"]["copy_last"] == r["next_frame_low_res"]["copy_last"]  # the same windows
    for bad, says in (
        (["--set", "lr=1"], "only the samplers"),
        (["--set", "sampler.steps=0"], "steps >= 1"),
        (["--set", "sampler.nope=1"], "unknown setting"),
    ):
        res = run_here("evaluate", tmp_path / "r", "--store", store, "--out", tmp_path / "bad", *bad)
        assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not (tmp_path / "bad").exists()
    # an upsampler-only run: evaluate scores the upsampler against bicubic, the same frames as above
    (tmp_path / "r" / "denoiser.pt").unlink()
    res = run_here("evaluate", tmp_path / "r", "--store", store, "--windows", "8", "--out", tmp_path / "u")
    assert res.returncode == 0, res.stderr
    u = json.loads((tmp_path / "u" / "evaluation.json").read_text())
    assert set(u) >= {"upsampler_alone", "step"} and "next_frame_low_res" not in u
    assert u["upsampler_alone"]["bicubic"] == r["upsampler_alone"]["bicubic"]
    # printed as a table: the upsampler's row, with bicubic's pooled PSNR as its baseline
    assert (
        "upsampler vs bicubic: PSNR pooled" in res.stdout
        and f"{u['upsampler_alone']['bicubic']['psnr']:.2f}" in res.stdout
    ), res.stdout
    res = run_here(
        "evaluate",
        tmp_path / "r",
        "--store",
        store,
        "--windows",
        "8",
        "--out",
        tmp_path / "u2",
        "--upsampler-steps",
        "2",
    )
    u2 = json.loads((tmp_path / "u2" / "evaluation.json").read_text())
    assert res.returncode == 0 and u2["sampler"]["steps"] == 2
    assert u2["upsampler_alone"]["upsampler"] != u["upsampler_alone"]["upsampler"]
    assert u2["upsampler_alone"]["bicubic"] == u["upsampler_alone"]["bicubic"]
    res = run_here("evaluate", tmp_path / "r", "--store", store, "--upsampler-steps", "0")
    assert res.returncode == 2 and "--upsampler-steps" in res.stderr
    (tmp_path / "r" / "upsampler.pt").unlink()
    res = run_here("evaluate", tmp_path / "r", "--store", store)
    assert res.returncode == 2 and "neither" in res.stderr


def _check_by_place(rows: list[dict], store) -> None:
    """The store keeps Mario's x of every frame (frame t: after step t-1), and evaluate scores each
    stage and 512-px bucket of the test windows, next frame and 32-step rollouts, beside copy-last."""
    from mario_kit.datasets.store import read_manifest, store_array

    m = read_manifest(store)
    x = np.asarray(store_array(store, "x_pos")[:])
    for e in m["episodes"]:
        with Episode(Path(m["source"]) / e["file"]) as ep:
            assert np.array_equal(x[e["start"] + 1 : e["start"] + e["frames"]], ep.info["x_pos"])
    test = [e for e in m["episodes"] if e["split"] == "test"]
    places = {(e["level"], int(v) // 512 * 512) for e in test for v in x[e["start"] : e["start"] + e["frames"]]}
    assert rows and {(r["level"], r["x_from"]) for r in rows} <= places
    for r in rows:
        assert (
            1 <= r["windows"] <= 16 and r["next_frame_copy_last_psnr"] > 10 and np.isfinite(r["next_frame_model_psnr"])
        )
        assert r["rollouts"] == 0 or (r["rollouts"] <= 2 and r["rollout_copy_last_psnr_last"] > 5)
    assert any(r["rollouts"] for r in rows)  # the test episodes are long enough for 32 steps somewhere


def test_ema_warms_up(tmp_path, store):
    res = run_here(
        "train",
        "--store",
        store,
        "--out",
        tmp_path / "r",
        "--config",
        "tiny",
        "--set",
        "max_steps=20",
        "--set",
        "ema=0.999",
        "-q",
    )
    assert res.returncode == 0, res.stderr
    ck = torch.load(tmp_path / "r" / "denoiser.pt", weights_only=True)
    torch.manual_seed(0)
    init = Denoiser(get_config("tiny").denoiser, 7).state_dict()
    dist = lambda a, b: sum(float((a[k].float() - b[k].float()).norm()) for k in a if a[k].is_floating_point())  # noqa: E731
    # with warm-up the EMA follows training; a plain 0.999 EMA would still sit ~98 % at the initial weights
    assert dist(ck["ema"], ck["model"]) < 0.5 * dist(init, ck["model"])


def test_resume_reads_the_runs_config_and_allows_only_safe_changes(tmp_path, store):
    run = tmp_path / "r"
    res = run_here("train", "--store", store, "--out", run, "--config", "tiny", "--set", "max_steps=2", "-q")
    assert res.returncode == 0, res.stderr
    res = run_here("train", "--store", store, "--out", run, "--resume", "--set", "lr=0.01", "-q")
    assert res.returncode == 2 and "lr: 0.001 -> 0.01" in res.stderr, res.stderr
    res = run_here(
        "train", "--store", store, "--out", run, "--resume", "--set", "max_steps=3", "-q"
    )  # no --config repeated
    assert res.returncode == 0 and "step 3" in res.stdout, res.stdout + res.stderr
    assert torch.load(run / "denoiser.pt", weights_only=True)["step"] == 3
    res = run_here(
        "train",
        "--store",
        store,
        "--out",
        tmp_path / "new",
        "--resume",
        "--config",
        "tiny",
        "--set",
        "max_steps=1",
        "-q",
    )
    assert res.returncode == 0 and "holds no run yet: starting a new one" in " ".join(res.stdout.split())


def test_init_starts_a_new_run_from_another_runs_weights(tmp_path, store):
    """`--set init=RUN` (fine-tuning): the new run's step 0 is the old run's model and EMA; with lr ~0 the
    weights stay the old ones and the EMA averages on from the old EMA. Bad inits: exit 2, no run folder."""
    tiny = ["--store", store, "--config", "tiny", "-q", "--set", "ema=0.9"]
    assert run_here("train", "--out", tmp_path / "a", *tiny, "--set", "max_steps=4").returncode == 0
    res = run_here(
        "train",
        "--out",
        tmp_path / "b",
        *tiny,
        "--set",
        f"init={tmp_path / 'a'}",
        "--set",
        "lr=1e-30",
        "--set",
        "weight_decay=0",
        "--set",
        "max_steps=1",
    )
    assert res.returncode == 0, res.stderr
    a, b = (torch.load(tmp_path / r / "denoiser.pt", weights_only=True) for r in "ab")
    assert b["step"] == 1 and all(
        torch.allclose(a["model"][k].float(), b["model"][k].float(), rtol=0, atol=1e-20) for k in a["model"]
    )
    d = min(0.9, (1 + 4) / (10 + 4))  # the EMA's warm-up goes on from step 4
    key = "inner.conv_out.weight"
    assert torch.allclose(b["ema"][key], a["ema"][key] * d + a["model"][key] * (1 - d), atol=1e-7)
    assert not torch.equal(b["ema"][key], a["ema"][key])
    other = torch.load(tmp_path / "a" / "denoiser.pt", weights_only=True)
    other["action_set"] = "right_only"
    torch.save(other, tmp_path / "other.pt")
    for bad, why in (
        (tmp_path / "nothing", "no checkpoint at"),
        (tmp_path / "a" / "config.json", "not a readable"),
        (tmp_path / "other.pt", "action set right_only"),
    ):
        res = run_here("train", "--out", tmp_path / "c", *tiny, "--set", f"init={bad}")
        assert res.returncode == 2 and why in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not (tmp_path / "c").exists()
    res = run_here(
        "train",
        "--out",
        tmp_path / "c",
        *tiny,
        "--set",
        f"init={tmp_path / 'a'}",
        "--set",
        "denoiser.channels=[8,8,8,8]",
    )
    assert res.returncode == 2 and "does not match this run's denoiser" in res.stderr, res.stderr


def test_learning_rate_warms_up_holds_and_decays_to_zero_at_max_steps(tmp_path, store):
    """decay_steps: the last steps before max_steps fall linearly to 0 (the log's lr column is the
    rate of the next step); without max_steps it is refused with exit 2 and no run folder."""
    res = run_here(
        "train",
        "--store",
        store,
        "--out",
        tmp_path / "r",
        "--config",
        "tiny",
        "-q",
        "--set",
        "lr=0.001",
        "--set",
        "warmup_steps=2",
        "--set",
        "max_steps=6",
        "--set",
        "decay_steps=3",
        "--set",
        "log_every=1",
    )
    assert res.returncode == 0, res.stderr
    rows = [r for r in csv.DictReader(open(tmp_path / "r" / "log.csv")) if not r["test_loss"]]
    assert [(int(r["step"]), float(r["lr"])) for r in rows] == [
        (1, 0.001),
        (2, 0.001),
        (3, 0.001),
        (4, 0.000667),
        (5, 0.000333),
        (6, 0.0),
    ]
    res = run_here("train", "--store", store, "--out", tmp_path / "s", "--config", "tiny", "--set", "decay_steps=3")
    assert res.returncode == 2 and "decay_steps (3) needs max_steps" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "s").exists()


def test_decay_fraction_and_the_steps_a_time_limit_plans():
    """decay_fraction decays over that share of max_steps; a time_limit's plan fits the measured rate
    into the time left (100 steps in 25 s, 75 s left: 300 more)."""
    cfg = get_config("tiny", ["lr=0.001", "warmup_steps=1", "max_steps=8", "decay_fraction=0.25"])
    assert [round(lr_factor(s, cfg), 3) for s in range(8)] == [1, 1, 1, 1, 1, 1, 1, 0.5]
    assert lr_factor(5, get_config("tiny", ["warmup_steps=1", "decay_fraction=0.25"])) == 1  # no max_steps: no decay
    assert plan_steps(120, 100, 25.0, get_config("tiny", ["time_limit=100"])) == 420
    assert plan_steps(120, 100, 125.0, get_config("tiny", ["time_limit=100"])) == 121  # past the limit: one more
    res = run_here(
        "train",
        "--store",
        "x",
        "--out",
        "y",
        "--config",
        "tiny",
        "--set",
        "decay_steps=3",
        "--set",
        "decay_fraction=0.5",
        "--set",
        "max_steps=9",
    )
    assert res.returncode == 2 and "set one of them" in res.stderr and "Traceback" not in res.stderr


def test_an_open_ended_run_shows_no_made_up_total():
    """epochs 0 (the cpu and gpu presets): the run goes until max_steps, time_limit or Ctrl-C, and the
    progress bar has no total (no ETA of hundreds of hours) unless max_steps gives one."""
    from mario_kit.world_model.config import check
    from mario_kit.world_model.training.trainer import _total_steps

    for name in ("cpu", "gpu"):
        cfg = get_config(name)
        check(cfg)
        assert cfg.epochs == 0 and _total_steps(cfg, False) is None
        assert _total_steps(get_config(name, ["max_steps=700"]), False) == 700
    assert _total_steps(get_config("tiny"), False) == 40  # two epochs of 20 steps: a real plan


def test_a_time_limit_stops_training_after_a_decay_it_planned(tmp_path, store):
    """--set time_limit=S: training stops within S seconds of its start whatever the epochs say,
    having set max_steps from its rate at S/4 and decayed the learning rate towards it."""
    res = run_here(
        "train",
        "--store",
        store,
        "--out",
        tmp_path / "r",
        "--config",
        "tiny",
        "-q",
        "--set",
        "epochs=1000",
        "--set",
        "time_limit=4",
        "--set",
        "decay_fraction=0.5",
        "--set",
        "log_every=1",
    )
    assert res.returncode == 0, res.stderr
    summary = json.load(open(tmp_path / "r" / "summary.json"))["stages"]["denoiser"]
    assert 2 <= summary["max_steps"] and summary["step"] <= summary["max_steps"], summary
    rows = [r for r in csv.DictReader(open(tmp_path / "r" / "log.csv")) if not r["test_loss"]]
    lrs = [float(r["lr"]) for r in rows if int(r["step"]) > summary["max_steps"] // 2]
    assert lrs and lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.001, lrs


def test_a_new_run_without_config_picks_the_machines_preset(tmp_path, store):
    from mario_kit.world_model.training.presets import default_preset

    name, why = default_preset()
    assert name == ("seed" if torch.cuda.is_available() else "cpu") and why
    res = run_here(
        "train",
        "--store",
        store,
        "--out",
        tmp_path / "r",
        "--set",
        "max_steps=1",
        "--set",
        "batch_size=2",
        "--set",
        "test_batches=1",
        "-q",
    )
    assert res.returncode == 0 and f"config: {name}" in res.stdout, res.stdout + res.stderr


def test_a_resume_after_a_crash_logs_each_step_once(tmp_path, store):
    run = tmp_path / "r"
    args = ["--store", store, "--out", run, "-q"]
    assert run_here("train", *args, "--config", "tiny", "--set", "max_steps=4", "--set", "log_every=1").returncode == 0
    with open(run / "log.csv", "a") as f:  # a run killed after its checkpoint at step 4 had logged steps 5 and 6
        f.write("denoiser,5,0,9.9,0.001,1.0,\ndenoiser,6,0,9.9,0.001,1.0,\n")
    res = run_here("train", *args, "--resume", "--set", "max_steps=6")
    assert res.returncode == 0, res.stderr
    rows = [r for r in csv.DictReader(open(run / "log.csv")) if not r["test_loss"]]
    steps = [int(r["step"]) for r in rows]
    assert steps == [1, 2, 3, 4, 5, 6] and all(r["loss"] != "9.900000" and r["loss"] != "9.9" for r in rows)


def test_rollout_metrics_on_synthetic_frames():
    """Exact values: a texture scrolled 3 px a step, a copy of the first frame, a known error on the
    pixels that changed."""
    from mario_kit.world_model.training.metrics import changed_psnr, horizontal_shift, scroll_error, scroll_so_far

    g = torch.Generator().manual_seed(0)
    tex = torch.randint(0, 256, (60, 200, 3), generator=g).float()
    frames = torch.stack([tex[:, 3 * t : 3 * t + 64] for t in range(9)])  # the level scrolls 3 px a step
    assert horizontal_shift(frames[:-1], frames[1:]).tolist() == [3] * 8
    assert horizontal_shift(frames[1:], frames[:-1]).tolist() == [-3] * 8
    real, last = frames[1:][None], frames[0][None]
    assert scroll_error(real, real, last) == {
        "real_scroll_px": 24.0,
        "model_scroll_px": 24.0,
        "scroll_error_px": 0.0,
        "copy_last_scroll_error_px": 24.0,
    }
    frozen = last[:, None].expand_as(real)  # a model that copies the scene
    assert scroll_error(frozen, real, last)["scroll_error_px"] == 24.0
    sr = scroll_so_far(real, last)  # the caller's own measure of the real scroll is used as given
    assert sr.tolist() == [[3, 6, 9, 12, 15, 18, 21, 24]]
    assert scroll_error(frozen, real, last, sr) == scroll_error(frozen, real, last)
    assert scroll_error(frozen, real, last, torch.zeros_like(sr))["real_scroll_px"] == 0.0
    base = torch.zeros(2, 60, 64, 3)
    moved = base.clone()
    moved[:, 10:12, 20:22] = 100.0  # 2 x 2 pixels change in each frame
    pred = moved.clone()
    pred[:, 10:12, 20:22] += 10.0  # off by 10 exactly there
    assert changed_psnr(pred, moved, base) == pytest.approx(10 * np.log10(255.0**2 / 100.0))
    assert changed_psnr(base, moved, base) == pytest.approx(10 * np.log10(255.0**2 / 100.0**2))  # copy-last
    assert changed_psnr(base, base, base) == float("inf")  # nothing changed


def test_scroll_oracle_moves_the_last_frame_by_the_real_scroll():
    """Exact values: the oracle is the last frame moved 3 px a step, its new columns repeating the
    border column, the HUD kept; a level that continues as its border does is matched exactly."""
    from mario_kit.world_model.training.metrics import scroll_oracle

    g = torch.Generator().manual_seed(1)
    tex = torch.randint(0, 256, (60, 200, 3), generator=g).float()
    frames = torch.stack([tex[:, 3 * t : 3 * t + 64] for t in range(9)])
    real, last = frames[1:][None], frames[0][None]
    o = scroll_oracle(real, last)
    assert o.shape == real.shape
    for t in range(8):  # step t has scrolled 3 (t + 1) px
        k = 3 * (t + 1)
        assert torch.equal(o[0, t, 8:, : 64 - k], real[0, t, 8:, : 64 - k])
        assert torch.equal(o[0, t, 8:, 64 - k :], last[0, 8:, 63:].expand(-1, k, -1))
        assert torch.equal(o[0, t, :8], last[0, :8])  # the score line does not scroll
    assert torch.equal(scroll_oracle(real, last, torch.zeros(1, 8, dtype=torch.long)), last[:, None].expand_as(real))
    assert torch.equal(
        scroll_oracle(last[:, None].expand(1, 4, -1, -1, -1), last), last[:, None].expand(1, 4, -1, -1, -1)
    )
    plain = tex.clone()
    plain[:, 64:] = plain[:, 63:64]  # beyond the first screen the level repeats its border column
    plain[:8] = 0.0  # a fixed score line
    frames = torch.stack([plain[:, t : t + 64] for t in range(5)])
    real, last = frames[1:][None], frames[0][None]
    assert torch.equal(scroll_oracle(real, last), real)  # frames 1..4: scrolled 1..4 px, all exact
    assert pooled_psnr(scroll_oracle(real, last)[:, -1], real[:, -1]) == float("inf")


def test_ema_copies_first_then_averages_with_its_warm_up():
    """decay_n = min(decay, (1 + n) / (10 + n)) after n updates, the first update a copy."""
    model = torch.nn.Linear(2, 1)
    ema = torch.optim.swa_utils.AveragedModel(model)
    expected = None
    for n, value in enumerate([1.0, 3.0, -2.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema_update(ema, model, 0.999, n)
        d = min(0.999, (1 + n) / (10 + n))
        expected = value if expected is None else expected * d + value * (1 - d)
        assert ema.module.weight[0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert int(ema.n_averaged) == 3 and model.weight.requires_grad


def test_a_levels_model_learns_the_stages_it_is_told(tmp_path):
    """`denoiser.levels=true`: each window carries its episode's stage; a run from a model without the
    embedding starts as that model (the embedding is zero), training moves only the rows of the stages
    it saw, and the draw then depends on the stage given, in `sample` and in WorldModelEnv."""
    from conftest import make_dataset
    from mario_kit.datasets.split import split_dataset
    from mario_kit.datasets.store import build_store
    from mario_kit.emulator import level_number
    from mario_kit.world_model.model.checkpoint import load_model
    from mario_kit.world_model.programs.world_model_env import WorldModelEnv

    make_dataset(tmp_path / "eps", episodes=4, max_steps=30, seed=3, level="1-1,1-2")
    split_dataset(tmp_path / "eps", 25, seed=0)
    store = tmp_path / "s.zarr"
    build_store(tmp_path / "eps", store, progress=False)
    ds = WindowDataset(store, None)
    b = ds.fetch(np.arange(len(ds)))
    want = np.concatenate([[level_number(e["level"])] * (e["frames"] - 1) for e in ds.m["episodes"]])
    assert np.array_equal(b["level"], want) and set(want) == {1, 2}, (b["level"], want)
    tiny = ["--store", store, "--config", "tiny", "-q", "--set", "max_steps=3"]
    assert run_here("train", "--out", tmp_path / "a", *tiny).returncode == 0
    res = run_here(
        "train", "--out", tmp_path / "b", *tiny, "--set", f"init={tmp_path / 'a'}", "--set", "denoiser.levels=true"
    )
    assert res.returncode == 0, res.stderr
    (a, a_cfg, _), (b_model, cfg, _) = load_model(tmp_path / "a", ema=False), load_model(tmp_path / "b", ema=False)
    added = Denoiser(ModelConfig(**{**vars(a_cfg.denoiser), "levels": True}), ds.n_actions).eval()
    _load_adding_levels(added, a.state_dict())  # what init does: the new model is the old one
    emb = b_model.inner.level_emb.weight.detach()
    assert emb[1:3].abs().sum(1).min() > 0 and emb[3:].abs().sum() == 0 and emb[0].abs().sum() == 0, emb.abs().sum(1)
    x, ctx, act = torch.randn(2, 3, 60, 64), torch.randn(2, 12, 60, 64), torch.zeros(2, 4, dtype=torch.long)
    draw = lambda m, lv: sample(m, ctx, act, cfg.sampler, noise=x, level=lv)  # noqa: E731
    unknown, one, two = draw(b_model, None), draw(b_model, torch.tensor([1, 1])), draw(b_model, torch.tensor([2, 2]))
    assert not torch.equal(one, two) and not torch.equal(one, unknown)
    assert torch.equal(draw(added, torch.tensor([1, 2])), draw(a, None))
    assert torch.equal(draw(b_model, torch.tensor([5, 5])), unknown)  # a stage it never saw: as unknown
    res = run_here(
        "train", "--out", tmp_path / "c", *tiny, "--set", "denoiser.upsampler=true", "--set", "denoiser.levels=true"
    )
    assert res.returncode == 2 and "levels conditions the denoiser only" in res.stderr, res.stderr
    low = np.random.default_rng(0).integers(0, 256, (4, 60, 64, 3), dtype=np.uint8)
    frames = {}
    for lv in ("1-1", "1-2", None, "8-4"):
        env = WorldModelEnv(tmp_path / "b", upsampler=False, device="cpu", seed=0, rewards=False)
        env.reset(low, np.zeros(4, np.int64), lv)
        frames[lv] = env.step(1)[0]
    assert not np.array_equal(frames["1-1"], frames["1-2"]) and np.array_equal(frames[None], frames["8-4"])
