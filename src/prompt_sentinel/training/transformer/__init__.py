"""Transformer fine-tuning: ``trainer`` (the resumable training loop), ``losses`` (focal / weighted
cross-entropy), ``controller`` (adaptive class weights, no torch) and ``checkpoints`` (base-checkpoint resolution
and resumable training checkpoints). Inference on the result is :mod:`prompt_sentinel.models.transformer`.

Submodules are imported on demand: importing this package does not import torch.
"""
