"""Export a trained model for deployment: python -m pipeline.export RUN_DIR|CHECKPOINT [--int8] (pipeline/deploy/export.py)."""

from pipeline.deploy.export import main
from pipeline.entry import exit_now

if __name__ == "__main__":
    exit_now(main())
