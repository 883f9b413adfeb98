"""The `modebench` command line: the root above algorithms, benchmarks, sweeps and analysis."""
