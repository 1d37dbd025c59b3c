"""Training: the loop and the parts of a run.

    trainer.py      Trainer: resume, epochs (train -> evaluate -> checkpoint), how the run ends
    components.py   build_components: model, wrapped model, optimizer, schedule, precision, EMA, loaders
    step.py         wrap_model, train_step, evaluate (flip at evaluation too): the free functions the trainer
                    and benchmarks share
    mixing.py       mixup and CutMix per batch on the device, soft targets (train.mixup_alpha, cutmix_alpha)
    checkpoint.py   CheckpointManager, ResumePoint: atomic, strict, weights_only checkpoints; ModelCard
    state.py        Counters (where the run is) and the RNG state, saved beside the trainable state
    weights.py      a checkpoint's weights for a new use (fine-tuning, export, predict): prefixes removed, strict
    finetune.py     train.init_from (weights of another run, another class count) and train.freeze
    confusion.py    per-class counts of an evaluation (confusion matrix, top-5 hits), summed over ranks
    ema.py, optim.py, schedule.py, precision.py   the weight EMA, SGD, learning-rate schedules, AMP
    meters.py       on-device loss statistics and throughput windows
    preemption.py   SIGTERM/SIGINT: finish the step, checkpoint, exit 75
    summary.py      final/*, best/*, the last console lines
    eval_only.py    eval.only: evaluate a checkpoint into <run>/eval/<checkpoint>-<split>-<time>/ (evaluation_folder)
    time_to_accuracy.py   when a run first reached each top-1 level (train.tta_thresholds); not test-time
                    augmentation, which is eval.tta (step.py evaluate)
    budget.py, budget_measure.py, budget_run.py   train.time_budget: the plan (pure arithmetic), measuring
                    at start-up, and keeping the budget during the run (pace, re-plans, what is recorded)

Imports go to pipeline.data, pipeline.runs and the root; nothing here imports pipeline.bench or
pipeline.tools.
"""
