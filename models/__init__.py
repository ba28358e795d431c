"""Models: a per-process registry (each model loads once) and the encoders built on it."""
