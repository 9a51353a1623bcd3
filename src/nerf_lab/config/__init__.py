"""The run's config: composed by Hydra, checked, built into objects, and a checkpoint's stored
config read back as data."""
