"""Schedules: placeholder replaced by the schedules work."""
