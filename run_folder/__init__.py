"""The run folder and what it holds: its creation and lock, checkpoints and the flags a saved run had, the resumable
training state, the run's record (config.json, log header) and its summary (summary.json, metrics.csv)."""
