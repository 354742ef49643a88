"""Gymnasium ids of mario-kit's environments, registered when this module is imported (as
`mario_kit.datasets.game_env` and `mario_kit.world_model.programs.dream_env` do). Without an import first,
`gym.make("mario_kit.envs:mario_kit/Dream-v0")` imports it itself. Entry points are strings, so
registering loads neither the emulator nor torch."""

from __future__ import annotations

import gymnasium as gym

GAME_ID = "mario_kit/SuperMarioBros-v0"  # the real game as mario-kit records it (level, action set, frame skip)
DREAM_ID = "mario_kit/Dream-v0"  # the world model as a game (DreamEnv)
GAME_ENTRY = "mario_kit.datasets.game_env:GameEnv"
DREAM_ENTRY = "mario_kit.world_model.programs.dream_env:DreamEnv"


def register() -> None:
    for env_id, entry in ((GAME_ID, GAME_ENTRY), (DREAM_ID, DREAM_ENTRY)):
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry)


register()
