"""Default and example configuration files that `veilcam init` writes into a home."""
