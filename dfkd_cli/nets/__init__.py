"""Networks: architecture records and their one reader, the factory that builds them,
populations (K members in one program), the MLP family and its fast path, the built-in rbf /
resmlp / cnn, activations, the optimisers that fit them and the regression metrics."""
