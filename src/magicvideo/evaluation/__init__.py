"""Evaluation metrics: FVD (I3D features, Fréchet distance) and CLIPSIM."""
