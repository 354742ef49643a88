"""The model: the inner network (network.py, blocks.py), the EDM wrapper around it (denoiser.py),
the samplers (sampler.py), checkpoints (checkpoint.py) and the model shipped in the package."""
