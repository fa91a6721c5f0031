"""Logging, checkpoints, seeding and devices, plots, and error reporting."""
