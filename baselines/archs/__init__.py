"""Networks of the deep and CLIP baselines, kept apart from their specs (as pyiqa keeps `archs/`).

A method module imports its arch module inside `build`, so listing specs imports no torch.
"""
