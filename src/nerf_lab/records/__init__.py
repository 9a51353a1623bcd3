"""A run's record: its config checked and built, its checkpoints read without running code, its
folder, metrics, stops and failures, and the Hydra callbacks that keep sweeps honest."""
