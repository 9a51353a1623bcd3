"""A run's record: its checkpoints read without running code, its folder, metrics, stops and
failures, resuming, and the Hydra callbacks that check a run before its folder exists and
summarise a sweep."""
