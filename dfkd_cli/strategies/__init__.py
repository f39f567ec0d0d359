"""Synthetic-data strategies, one module each: their schemas (schemas.py), the classes that run
them (registry.py names them), the arm labels (labels.py)."""
