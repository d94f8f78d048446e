"""The camera node: capture, find zones, redact and encrypt, sign, publish."""
