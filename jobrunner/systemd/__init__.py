"""Talking to systemd: systemctl show, sd_notify."""
