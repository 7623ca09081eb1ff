"""Pipelines, one stage a module (keyframes, interpolation, upscale) and the whole cascade."""
