"""``python -m bench.loadtest``: simulated joins against the local Convex backend, every
caching strategy side by side in one run (see docs/benchmarks.md, "Load test")."""
