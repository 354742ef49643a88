"""Training and judging a model: presets, the loss (training noise), the trainer, evaluation."""
