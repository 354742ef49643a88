"""What `evaluate` measures, as dataclasses: one field a figure, each figure once.

`Evaluation.to_json()` is evaluation.json (docs/FORMAT.md): the field names are its keys, rollouts
appear as `rollout_H`, and a part that was not measured is left out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PsnrStats:
    """`mean` over the windows whose target differs from the last context frame (copy-last is exact
    on the others), `median` over all windows, `pooled`: PSNR of the mean squared error over all."""

    mean: float
    median: float
    pooled: float


@dataclass
class SsimStats:
    mean: float = float("nan")  # nan: no finite value
    median: float = float("nan")


@dataclass
class Scores:
    psnr: PsnrStats
    ssim: SsimStats


@dataclass
class FrameScores:
    """One predicted frame per window: the model and the copy-last baseline on the same windows."""

    windows: int
    static_windows: int  # windows whose target equals the last context frame
    model: Scores
    copy_last: Scores


@dataclass
class PooledScores:
    psnr: float  # pooled over the windows
    ssim: SsimStats


@dataclass
class UpsamplerScores:
    """Recorded low-res frames lifted to full res by the upsampler, against plain bicubic."""

    windows: int
    upsampler: PooledScores
    bicubic: PooledScores


@dataclass
class RolloutScores:
    """h frames generated with the recorded actions, scored per step against the real game's frames;
    `_last` figures at the last step, `_mean` over the steps. The scroll oracle is copy-last moved
    by the real scroll; `model_gap_last` the lead over copy-last, with its 90% bootstrap interval."""

    rollouts: int
    model_psnr_last: float
    model_psnr_mean: float
    copy_last_psnr_last: float
    copy_last_psnr_mean: float
    scroll_oracle_psnr_last: float
    scroll_oracle_psnr_mean: float
    model_gap_last: float
    model_gap_last_ci90: list[float]
    model_ssim_last: float
    copy_last_ssim_last: float
    model_changed_psnr_last: float
    copy_last_changed_psnr_last: float
    real_scroll_px: float
    model_scroll_px: float
    scroll_error_px: float
    copy_last_scroll_error_px: float
    # with an upsampler and a full-res store: the last frame at full res
    model_psnr_last_full_res: float | None = None
    copy_last_psnr_last_full_res: float | None = None
    model_ssim_last_full_res: float | None = None
    copy_last_ssim_last_full_res: float | None = None


PLACE_HORIZON = 32  # the rollout length scored per place


@dataclass
class PlaceScores:
    """One stage's x bucket [x_from, x_from + PLACE_PX) (`datasets.format`): pooled PSNR (dB) of the
    sampled next frame and of the last frame of PLACE_HORIZON-step rollouts, each beside copy-last on
    the same windows."""

    level: str
    x_from: int
    windows: int
    next_frame_model_psnr: float
    next_frame_copy_last_psnr: float
    rollouts: int = 0  # windows with PLACE_HORIZON real frames after them (0: none this long here)
    rollout_model_psnr_last: float | None = None
    rollout_copy_last_psnr_last: float | None = None


@dataclass
class Evaluation:
    run: str
    store: str
    step: int
    sampler: dict[str, Any]  # the denoiser's sampler (the upsampler's, for an upsampler-only run)
    next_frame_low_res: FrameScores | None = None
    upsampler_sampler: dict[str, Any] | None = None
    next_frame_full_res: FrameScores | None = None
    upsampler_alone: UpsamplerScores | None = None
    rollouts: dict[int, RolloutScores] = field(default_factory=dict)
    rollouts_skipped: list[int] = field(default_factory=list)  # horizons no test episode is long enough for
    by_place: list[PlaceScores] = field(default_factory=list)  # per stage and x bucket (places.py)
    rewend: dict[str, Any] | None = None  # the reward and end model's test scores (rewend.RewEndScores)

    def to_json(self) -> dict[str, Any]:
        d = {k: _drop_none(v) for k, v in dataclasses.asdict(self).items() if v is not None and k != "rollouts"}
        d["by_place"] = [_drop_none(r) for r in d["by_place"]]
        for key in ("rollouts_skipped", "by_place"):
            if not d[key]:
                d.pop(key)
        d.update({f"rollout_{h}": _drop_none(dataclasses.asdict(r)) for h, r in self.rollouts.items()})
        return d


def _drop_none(v: Any) -> Any:
    return {k: x for k, x in v.items() if x is not None} if isinstance(v, dict) else v
