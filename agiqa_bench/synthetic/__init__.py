"""SynthAGIQA, the built-in synthetic dataset, and its synthetic CLIP world.

- `dataset`: SynthAGIQA: the world, the renderer, MOS generation, writing and caching the set.
- `corpus`: a caption corpus from the same world, in DiffusionDB's layout.
- `clip_pretrain`: contrastive pretraining of the tiny CLIP on that corpus.

Import the modules themselves; this package imports nothing.
"""
