"""Studies: experiments built on the core, above it (nothing below imports them).

    claims/          each paper's mechanism claims: the catalogue, the runs, the probes, the report
    cross_select.py  `modebench cross-select`: every stored proposer with GEM's selection at several N
    budget.py        the online-tuning budget and cross-selection tables and figures
    cli.py           the `claims` and `cross-select` commands, and the study tables `tables`/`plots` add

A study may name methods (the claims are the papers' claims about named methods) and import
anything below it: algorithms, benchmarks, sweeps, analysis. Only the command-line root imports it.
"""
