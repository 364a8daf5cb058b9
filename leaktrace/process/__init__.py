"""A traced process and how it is found: the one TracedProcess per PID,
targets, containers, cgroups and followed forks.
"""
