"""The source of truth for agents: the store protocol (``protocol``), its Convex and JSON
file implementations, the factory that picks one from the settings, and the write-back
of built prompts."""
