"""Tools that work on run directories, beside the trainer.

    python -m pipeline.tools.compare runs/A runs/B     # one table of what differs and what each reached
    python -m pipeline.tools.sweep CONFIG --grid optim.lr=0.05,0.1   # a grid of runs, then the table
    launch.py                                          # launch.sh's Python half (not typed by hand)

They read what runs wrote (config.yaml, metrics.jsonl, summary.json) and start training only
through the real entry points (train_dist.py, torchrun), never by importing the trainer.
"""
