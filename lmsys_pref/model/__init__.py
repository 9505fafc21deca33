"""What a scoring model is: prompt layouts and tokenization (`prompt`), heads, precision and
attention choices, building, saving and loading (`models`, peft/bitsandbytes/PiSSA), the model
card. Imports torch; imports nothing from `infer/` or `train/`."""
