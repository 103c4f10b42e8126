"""Training (float and QAT), checkpoints and evaluation (the `train` / `evaluate` stages)."""
