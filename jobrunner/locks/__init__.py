"""Locks: flock(2) files and slots, and leases for fleets."""
