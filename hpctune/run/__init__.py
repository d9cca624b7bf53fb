"""The run directory and what is written in it: spec, paths and lock, records, journal, results."""
