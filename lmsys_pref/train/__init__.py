"""Training: the Trainer loop on one split (`loop`) and the holdout / k-fold fits (`fit`).
Imports torch, `model/` and `infer/` (training scores its rows through the engine)."""
