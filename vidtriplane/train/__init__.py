"""Training: data, losses, optimiser, distributed helpers, checkpoints, logs and the loop (loss weights and the
run config live in ``vidtriplane.config.train``)."""
