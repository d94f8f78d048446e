"""veilcam: a privacy-preserving security camera pipeline (command line in veilcam.cli)."""

__version__ = "0.1.0"
