"""The reward and end model: what a step gave (its reward, in gym-super-mario-bros' units) and whether
it ended the episode (a death or the flag), read from the frames around the step and its action.

The denoiser predicts frames only; an agent learning in the dream needs the rest of the game's
answer. DIAMOND's reward/end model is a recurrent CNN over the whole segment; here the game's reward
is mostly Mario's progress and a death is a sprite or a fall in the next frame, so a feed-forward
CNN on `n_context` frames up to the step plus the frame after it sees what decides both. It lives
in the run folder beside the denoiser as `rewend.pt` (the checkpoint format of the other stages,
stage `rewend`), trained by `mario-kit train --set stage=rewend` (training/rewend.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mario_kit import UserError
from mario_kit.datasets.store import END_DEATH, END_FLAG, END_NONE
from mario_kit.world_model.config import RewEndConfig
from mario_kit.world_model.model.checkpoint import MAX_ACTIONS, checkpoint_config, load_checkpoint, path_of

STAGE = "rewend"
REWARD_SCALE = 15.0  # the model's reward output is in units of nes-py's per-frame clip
END_NAMES = {END_NONE: None, END_DEATH: "death", END_FLAG: "flag"}  # the end head's classes, the store's `ends`


class RewEndModel(nn.Module):
    """frames (B, n_context + 1, 3, H, W) in [-1, 1] (the last is the frame after the step) and the
    step's actions (B,) -> (reward (B,) in game units, end logits (B, 3): none, death, flag)."""

    end_shift: torch.Tensor

    def __init__(self, cfg: RewEndConfig, n_actions: int):
        super().__init__()
        self.cfg, layers, prev = cfg, [], 3 * (cfg.n_context + 1)
        for ch in cfg.channels:
            layers += [nn.Conv2d(prev, ch, 3, stride=2, padding=1), nn.SiLU()]
            prev = ch
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten())
        self.act_emb = nn.Embedding(n_actions, 32)
        self.head = nn.Sequential(nn.Linear(prev * 16 + 32, 256), nn.SiLU(), nn.Linear(256, 4))
        # log(true prior / training prior) of each end class: training draws ends more often than
        # the game has them (RewEndConfig.end_share); predictions are shifted back (logit adjustment)
        self.register_buffer("end_shift", torch.zeros(3))

    def forward(self, frames: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(frames.flatten(1, 2))
        out = self.head(torch.cat((x, self.act_emb(actions)), dim=1))
        return out[:, 0] * REWARD_SCALE, out[:, 1:]

    @torch.inference_mode()
    def predict(self, frames: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reward (B,), end class (B,)): the most likely end of each step under the game's prior."""
        reward, logits = self(frames, actions)
        return reward, (logits + self.end_shift).argmax(1)


def load_rewend(run: str | Path, device: str | torch.device = "cpu") -> tuple[RewEndModel, dict]:
    """The run's reward and end model and its checkpoint's metadata (action set, step, result)."""
    path = path_of(run, STAGE)
    ck = load_checkpoint(path)
    try:
        if ck.get("stage") != STAGE:
            raise ValueError(f"a {ck.get('stage')} checkpoint, not a {STAGE} one")
        cfg = checkpoint_config(ck)
        n_actions = int(ck["n_actions"])
        if not 1 <= n_actions <= MAX_ACTIONS:
            raise ValueError(f"n_actions {n_actions} outside 1..{MAX_ACTIONS}")
        model = RewEndModel(cfg.rewend, n_actions)
        model.load_state_dict(ck["model"])
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RuntimeError) as e:
        raise UserError(f"{path} is not a reward and end model this mario-kit can build ({str(e)[:200]})") from None
    meta = {"action_set": ck["action_set"], "n_actions": n_actions, "step": ck["step"]}
    return model.eval().to(device), meta
