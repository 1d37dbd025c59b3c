"""Names and places shared by several modules, defined once."""

from __future__ import annotations

import signal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ARCHIVE = REPO_ROOT / "data" / "cifar10-sample.tar.gz"  # the CIFAR-10 subset shipped in the repo
BENCH_RESULTS_DIR = REPO_ROOT / "bench-results"  # default parent of benchmark result folders

# Resize filters every loader implements; the config adds "random" (one of these per image) for training.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")

# Set by pipeline/tools/launch.py (./launch.sh's torchrun agent) for the workers it starts: it prints
# the ending and the continue command itself, and a worker asked to stop passes the request on to it.
LAUNCHER_ENV = "PIPELINE_LAUNCHER"
# What that agent sends a worker right before torchrun's SIGTERM when it stops the job because another
# worker ended (a crash, a kill): the worker then stops quietly instead of reporting a stop request.
LAUNCHER_STOP_SIGNAL = signal.SIGUSR1
# In the run directory: the traceback of rank k's collective that broke because another process of the
# job died (pipeline/training/failures.py); the launcher names the files after naming the process.
RANK_ERROR_LOG = "rank{rank}-error.log"

# The training-only augmentation levers (pipeline/data/augment/levers.py): the choices the config offers.
AUTO_AUGMENTS = ("none", "trivial_augment", "rand_augment", "auto_augment")
AUTO_AUGMENT_POLICIES = ("image_net", "reduced_cifar10", "svhn", "reduced_image_net")
# Progressive resizing's most distinct training sizes: each compiles once under train.compile, and
# torch._dynamo keeps at most recompile_limit (8) graphs per function before falling back to eager.
MAX_PROGRESSIVE_SIZES = 6

# Limits on what one input file may cost before anything decodes or reads it (data.max_pixels,
# data.max_member_mb): Pillow's default decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS: a
# 9,459 x 9,459 image, 268 MB decoded as RGB), and a member size no encoded image under it needs.
MAX_IMAGE_PIXELS = 89_478_485
MAX_MEMBER_MB = 256
