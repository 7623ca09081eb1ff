"""Training: video-text data sets, the latent cache, the diffusion and VAE trainers."""
