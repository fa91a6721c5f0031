"""The stable import path `utilities.checkpoint.load_weights` of the public API (the code is in run_folder/)."""
