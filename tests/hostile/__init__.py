"""Hostile input: fuzzed parsers, raw sockets and floods against real processes."""
