"""Helpers of scripts/bench.py: the ground-truth sink, the peer schedulers, measurement, profiles.

Every module here runs either inside the bench process or as a child process that the bench
starts (`python -m benchlib.<module>` with `scripts/` on the path) and stops by PID.
"""
