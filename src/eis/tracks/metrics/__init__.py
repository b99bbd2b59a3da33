"""Metrics used by the tracks, batched in torch, one module per kind (import from the module).

- ``localization``: does a relevance map point at a known pixel mask (Pearson, pointing game, relevance
  mass and rank accuracy, ROC-AUC, top-k IoU), and the shared channel reduction ``reduce_channels``.

Each module's docstring gives the definitions and the handling of degenerate inputs.
"""
