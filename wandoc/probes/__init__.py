"""Probes: each reads one part of the machine or the user's files and returns facts; none raises."""
