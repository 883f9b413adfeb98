"""The claims report's experiments: each paper's mechanism claims, run through the core on the
toy suite, one measurement record per (claim, seed) in the results store.

    spec.py     Claim, Run, Expect, Measurement, Trial (what a measurement reads), Scale
    catalog.py  the claims (GEM, LOM, ISEP, DROL) and their measurements
    probes.py   direct probes of a trained checkpoint (mode shares, coverage, disagreement)
    runner.py   train the declared runs, measure, write the records

studies/claims/render.py renders results/claims.md and claims.csv from the records alone.
"""
