"""Tracking: experiment trackers (TensorBoard, MLflow), Hydra callbacks (the sweep summary) and the
objective a distill job returns to a Hydra sweeper."""
