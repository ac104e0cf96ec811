"""Where a version's prompt, config and greeting audio are kept between loads, nearest
first: RAM in this process (``ram``), the host's LMDB file shared by its job processes
(``host``), and Redis shared by the fleet (``redis``). The store (``services.store``) is
read only when every tier misses."""
