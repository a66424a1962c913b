"""The training stage: the experiment config, the per-worker loop, checkpoints, and the driver."""
