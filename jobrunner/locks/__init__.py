"""Locks: flock(2) files and slots, and leases for fleets (``abc``: the backend interface; ``redis``, ``etcd``)."""
