"""Training: the run, the loop, checkpoints and outputs, LoRA, DDP."""
