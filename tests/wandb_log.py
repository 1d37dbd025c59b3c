"""Read what W&B actually wrote: the records of a run's offline .wandb files.

The reader lives in the library (pipeline/runs/wandb_files.py), where the trainer uses it on resume to
learn what earlier sessions delivered; the tests use the same reader to check logged metrics
without mocking wandb.
"""

from pipeline.runs.wandb_files import offline_run, read_records, read_session, session_logs

__all__ = ["offline_run", "read_records", "read_session", "session_logs"]
