"""Evaluation of run folders: report, blend (+ inputs, calibrate), bias probes (+ report, judge
sets), EDA and the notebook view. Torch-free except where a probe loads a model through
`infer.loaders`."""
