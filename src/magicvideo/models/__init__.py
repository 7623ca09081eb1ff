"""MagicVideo's networks, one paper concept a module (adaptor, directed temporal attention, 3D U-Net, VideoVAE, interpolation, super-resolution)."""
