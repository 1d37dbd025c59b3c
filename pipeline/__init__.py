"""Training machinery: typed config, DALI input pipelines, the distributed trainer and benchmarks."""
