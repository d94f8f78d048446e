"""The viewer: verify frames end to end, show them public, or unlocked with a user's keys."""
