"""Input safety: everything a user can hand us (images, weights, datasets), checked against the limits in one place."""
