"""The transformer side of training: prompt encoding, scoring heads, model loading (peft,
bitsandbytes, PiSSA), the Trainer loop and the holdout / k-fold fits. Imports torch."""
