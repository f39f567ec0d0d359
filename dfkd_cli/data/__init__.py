"""Data: datasets and their splits and scalers, per-feature input domains, their priors and projection."""
