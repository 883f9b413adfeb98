"""Speed benchmarks (not part of the installed core): `python -m perf.speed`."""
