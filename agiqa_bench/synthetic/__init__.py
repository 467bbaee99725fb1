"""SynthAGIQA, the built-in synthetic dataset, and the synthetic CLIP world built on it.

- `world`: what a prompt can ask for (counts, colours, shapes, backgrounds, styles),
  the simulated generators' defect/error profiles, and the true quality and alignment scores.
- `render`: drawing an image: the clean render of a spec, then the quality defects.
- `dataset`: one SynthAGIQA set: the config, per-image plans, MOS labels, writing and
  caching the folder, and the loader behind `load_dataset("synthetic")`.
- `corpus`: a caption corpus from the same world, in DiffusionDB's layout.
- `clip_pretrain`: contrastive pretraining of the tiny CLIP on that corpus (torch, open_clip).

Import the modules themselves; this package imports nothing.
"""
