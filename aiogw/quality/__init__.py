"""Quality: what answered each request (for feedback), the feedback itself, and the spot
checks a judge model makes."""
