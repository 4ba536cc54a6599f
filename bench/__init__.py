"""The benchmark of the processing script against the ceiling, the I/O floor, the blog pattern
and the peers: ``make bench`` (see ``bench/run.py``)."""
