"""Where a version's prompt, config and greeting audio are kept between loads, nearest
first: RAM in this process (``ram``), the host's LMDB file shared by its job processes
(``host_owner`` writes it, ``host_reader`` reads it, ``host_format`` is their shared
format; ``host_role`` is which of them this process is), and Redis shared by the fleet
(``redis``). Their shapes are in ``protocols``, their one entry type and codec in
``entry`` (greeting audio in ``greeting``). The store (``services.store``) is read only
when every tier misses.
"""
