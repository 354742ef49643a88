"""The DIAMOND world model: denoiser and upsampler (EDM), training, evaluation, play, dream.

`mario_kit.world_model.DreamEnv` is the model as a Gymnasium environment (imported on first use,
so that training on a machine without gymnasium does not need it)."""


def __getattr__(name: str):
    if name == "DreamEnv":
        from mario_kit.world_model.programs.dream_env import DreamEnv

        return DreamEnv
    raise AttributeError(name)
