"""Inference: token-budget batches scored by one thread per device (engine), swap TTA, the
score cache, and the predictor that `make predict` and training use. Imports torch."""
