"""The store's circuit breaker: after the store fails, rest it for a few seconds.

Why: while the store is down, every miss would otherwise wait out its full timeout
before serving the stale entry it was going to serve anyway. While the breaker is open,
loads answer from what the tiers hold first and only ask the store when they hold
nothing usable. One document failing to parse is not the store failing and does not
open it. No I/O, no clock of its own: the caller passes the time.
"""

from __future__ import annotations

# After the store fails, loads serve what the tiers hold for this long before trying again.
STORE_REST_SECONDS = 5.0


class StoreBreaker:
    def __init__(self, rest_seconds: float = STORE_REST_SECONDS) -> None:
        self._rest_seconds = rest_seconds
        self._resting_until = 0.0

    def resting(self, now: float) -> bool:
        """True while the store failed less than ``rest_seconds`` ago."""
        return now < self._resting_until

    def failed(self, now: float) -> None:
        self._resting_until = now + self._rest_seconds

    def succeeded(self) -> None:
        self._resting_until = 0.0
