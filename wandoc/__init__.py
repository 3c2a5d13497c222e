"""wandoc: the pre-launch doctor for Wan video generation."""

__version__ = "0.1.0"
