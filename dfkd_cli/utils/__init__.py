"""The run's plumbing, imported by every layer: atomic files and locks, random streams, the run-time
(device, seeding, signals), progress bars and lines and the run directory's tables."""
