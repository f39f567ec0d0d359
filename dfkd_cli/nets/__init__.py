"""Networks: the seam every network answers, the MLP family and its fast path, the built-in rbf /
resmlp / cnn, activations, the optimisers that fit them and the regression metrics."""
