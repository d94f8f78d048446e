"""Shared by every veilcam node: wire format, crypto helpers, config, deployment layout."""
