"""Models: locating checkpoints, LoRA injection, and the per-layer map of LoRA parameters."""
