"""The store node: verify, archive, acknowledge, relay, answer queries."""
