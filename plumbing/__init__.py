"""Process plumbing that knows nothing of metric learning: one-line user errors and exit codes, crash-safe file
writes, stop signals, devices and random states, and the collectives of a torchrun run."""
