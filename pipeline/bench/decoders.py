"""DALI's ways to decode a random-resized crop, side by side, on a folder of photographs.

    python -m pipeline.bench.decoders /data/flowers/train [--threads 2] [--batch 64] [--device cpu|gpu]

The question behind `data.train.roi_decode` and the choice of `fn.decoders.image_slice` with
windows drawn in numpy (pipeline/data/crops.py) over DALI's `fn.decoders.image_random_crop`: what
does each cost? Every variant decodes the same encoded bytes, held in memory (file reading is not
timed), through one external source; the windows are torchvision's distribution, drawn per batch
from each image's header size. Variants, alone and followed by the resize to size x size:

    full decode          fn.decoders.image: the whole image (the window's cost without ROI)
    window decode        fn.decoders.image_slice: only the window (the loader's default)
    full decode + slice  fn.decoders.image, then fn.slice (data.train.roi_decode=false)
    DALI random crop     fn.decoders.image_random_crop (DALI's own window distribution and RNG)

On the GPU (`--device gpu`) every decoder is `mixed`, with `--hw-decoder-load` of each batch on
the hardware JPEG decoder. Timing as `python -m pipeline.bench`: warm-up batches first, then
`--repeats` windows of `--steps` batches; the median and the spread are printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pipeline.bench.measure import measure
from pipeline.data.crops import random_resized_crops
from pipeline.data.images import IMAGE_EXTENSIONS, image_size

log = logging.getLogger(__name__)
AREA, ASPECT = (0.08, 1.0), (3 / 4, 4 / 3)


def variants(size: int, gpu: bool, hw_decoder_load: float) -> dict[str, Callable[..., Any]]:
    """name -> graph body(data, anchor, shape) for each decoding choice, with and without the resize."""
    from nvidia.dali import fn, types

    decoder = dict(device="mixed", hw_decoder_load=hw_decoder_load) if gpu else dict(device="cpu")
    window = dict(axis_names="WH", normalized_anchor=False, normalized_shape=False)
    decoders = {
        "full decode": lambda d, a, s: fn.decoders.image(d, output_type=types.RGB, **decoder),
        "window decode": lambda d, a, s: fn.decoders.image_slice(d, a, s, output_type=types.RGB, **window, **decoder),
        "full decode + slice": lambda d, a, s: fn.slice(fn.decoders.image(d, output_type=types.RGB, **decoder), a, s,
                                                        **window),
        "DALI random crop": lambda d, a, s: fn.decoders.image_random_crop(
            d, output_type=types.RGB, random_area=list(AREA), random_aspect_ratio=list(ASPECT), **decoder),
    }
    bodies = dict(decoders)
    for name, body in decoders.items():
        if name != "full decode":
            bodies[f"{name} + resize {size}"] = (
                lambda d, a, s, body=body: fn.resize(body(d, a, s), size=[size, size], interp_type=types.INTERP_LINEAR,
                                                     antialias=True))
    return bodies


def photographs(folder: Path, limit: int) -> tuple[list[np.ndarray], np.ndarray]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:limit]
    if not files:
        raise SystemExit(f"{folder}: no image files")
    data = [np.fromfile(p, np.uint8) for p in files]
    return data, np.array([image_size(d, str(p)) for d, p in zip(data, files)])


def bench_variant(body: Callable[..., Any], data: list[np.ndarray], sizes: np.ndarray, args: argparse.Namespace,
                  device: torch.device) -> dict[str, Any]:
    from nvidia.dali import fn, pipeline_def

    batch, n = args.batch, len(data)

    def source(info: Any) -> tuple[Any, ...]:
        idx = (np.arange(batch) + info.iteration * batch) % n
        rng = np.random.default_rng([0, info.iteration])
        top, left, h, w = random_resized_crops(sizes[idx, 0], sizes[idx, 1], AREA, ASPECT, rng)
        return ([data[i] for i in idx], np.stack([left, top], 1).astype(np.float32),
                np.stack([w, h], 1).astype(np.float32))

    @pipeline_def(batch_size=batch, num_threads=args.threads, device_id=0 if args.device == "gpu" else None, seed=0,
                  prefetch_queue_depth=2)
    def graph():
        d, a, s = fn.external_source(source=source, num_outputs=3, batch=True, batch_info=True)
        return body(d, a, s)

    pipe = graph()
    pipe.build()

    def run(steps: int) -> int:
        for _ in range(steps):
            pipe.run()
        return steps * batch

    return measure(run, warmup=args.warmup, steps=args.steps, repeats=args.repeats, device=device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.decoders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a folder of photographs (searched recursively)")
    parser.add_argument("--threads", type=int, default=2, help="DALI threads (default 2)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--size", type=int, default=224, help="output side of the resize (default 224)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="decoder: cpu, or gpu (mixed)")
    parser.add_argument("--hw-decoder-load", type=float, default=0.65, help="gpu: hardware decoder share (default 0.65)")
    parser.add_argument("--images", type=int, default=1000, help="photographs read into memory (default 1000)")
    parser.add_argument("--steps", type=int, default=10, help="timed batches per repeat (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="discarded batches first (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is quoted (default 5)")
    parser.add_argument("--only", default="", help="comma-separated substrings: run the variants whose name has one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    data, sizes = photographs(args.folder, args.images)
    log.info("%d photographs, median %dx%d px; %s decoder, %d threads, batch %d", len(data),
             *np.median(sizes, axis=0)[::-1].astype(int), args.device, args.threads, args.batch)
    only = [o for o in args.only.split(",") if o]
    print(f"{'variant':<36} {'images/s (min-max)':>24}")
    for name, body in variants(args.size, args.device == "gpu", args.hw_decoder_load).items():
        if only and not any(o in name for o in only):
            continue
        result = bench_variant(body, data, sizes, args, device)
        print(f"{name:<36} {result['median']:>10,.0f}  ({result['min']:,.0f}-{result['max']:,.0f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
