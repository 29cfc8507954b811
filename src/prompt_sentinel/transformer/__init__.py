"""Transformer fine-tuning and inference (issue #4).

* ``trainer.train_transformer(train_df, val_df, cfg, out_dir, base_model=None, progress=True)`` — fine-tune
  a checkpoint into a Prompt Sentinel artifact (resumable; see the module docstring);
* ``model.load_transformer_model(path, descriptor)`` — called by ``modeling.load_model`` for
  ``family == "transformer"``;
* ``losses`` (focal / weighted cross-entropy), ``controller`` (adaptive class weights, no torch),
  ``checkpoints`` (``resolve_checkpoint`` and resumable training checkpoints).

Submodules are imported on demand: importing this package does not import torch.
"""
