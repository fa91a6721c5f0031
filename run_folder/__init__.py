"""The run folder and what it holds: its creation and lock, checkpoints, the resumable training state, the run's
record (config.json, log header) and its summary (summary.json, metrics.csv)."""
