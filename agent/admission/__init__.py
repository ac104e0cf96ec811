"""Admission: what a job request must pass before an executor is spent on it.

Which agent the room names (``targeting``), whether this worker serves its organization
(``tenancy``), whether the room already has an agent of ours (``room_guard``), how full
the worker reports itself to livekit-server (``capacity``), and ``on_request``, which
asks them in turn (``requests``).
"""
