"""Local stand-ins for the services around the worker, started for real: the local
Convex backend, redis-server and livekit-server. Used by tests, benchmarks, the load
test and ``make worker``; never by the worker in production."""
