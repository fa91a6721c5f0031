"""`load_weights(model, path)` where the public API has always had it; the checkpoint code is run_folder.checkpoint."""
from run_folder.checkpoint import load_weights

__all__ = ['load_weights']
