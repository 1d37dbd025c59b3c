"""Run records: what a training run leaves in runs/<name>/ and sends to W&B.

    rundir.py       the run directory every rank agrees on, and per-rank logging
    metrics.py      metrics.jsonl: MetricsLog writes it, read_metrics reads it (no torch)
    clock.py        RunClock: run time and training time, continued across resumes
    records.py      RunRecords: metrics.jsonl + W&B + summary.json + resolved.json + curves.png
    tracking.py     Tracker: W&B from rank 0, history that survives kills
    wandb_files.py  reading W&B's offline .wandb transaction logs
    resolved.py     resolved/* environment values and automatic tags
    fingerprint.py  resolved/data_fingerprint
    envinfo.py      machine, accelerator, versions, git revision
    plots.py        curves.png
    per_class.py    per_class.csv, confusion.csv, confusion.png: which classes fail (written and read, no torch)
    progress.py     the rank-0 progress bar or lines

Records know nothing of the training loop: they import the root and pipeline.data (for the
fingerprint) only; what they read of the checkpoint counters is the `RunPosition` protocol.
"""
