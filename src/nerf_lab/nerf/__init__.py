"""The NeRF: rays, positional encoding, the field, samplers and volume rendering, as small
pure pieces and the model that puts them together. Imports torch and nothing of Lightning or
Hydra (a test checks this), so it can be read, tested and reused on its own."""
