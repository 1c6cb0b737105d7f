"""Pieces shared by every dataset folder: config, mixture maths, metrics, I/O."""
