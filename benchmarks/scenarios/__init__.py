"""One module per scenario, each with NAME, TITLE, BASELINES, available(), run(ctx) and
targets(records, ctx) (see :mod:`benchmarks.harness`)."""
