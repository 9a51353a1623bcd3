"""Training with Lightning and Hydra: the LightningModule, callbacks, builders from config,
hardware choices, checkpoint I/O and the run records a command leaves behind."""
