"""The diffusion core on toy vectors (1-D and 2-D distributions): an MLP denoiser trained and
sampled by the same DiffusionConfig, training loop, samplers and guidance as the latent UNet, and
judged by Wasserstein distances to fresh data (`make toy`, tests/test_toy.py)."""
