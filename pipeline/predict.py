"""Classify image files: python -m pipeline.predict MODEL PATH... (pipeline/deploy/predict.py)."""

from pipeline.deploy.predict import main
from pipeline.entry import exit_now

if __name__ == "__main__":
    exit_now(main())
