"""`python -m pipeline.config`: see pipeline/config/cli.py."""

import sys

from pipeline.config.cli import main

sys.exit(main())
