"""dimdiff: diffusion models whose signal dimension changes along the process."""

__version__ = "0.1.0"
