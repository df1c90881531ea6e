"""Training: losses, the MS-STFT discriminator, the loss balancer, codebook learning and the training loop."""
