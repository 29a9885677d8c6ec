"""Training: run config, optimizer and schedules, checkpoints, run directories, distributed set-up, loop."""
