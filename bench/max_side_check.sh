#!/usr/bin/env bash
# What resizing at write time saves: the loader alone on 12 MP photographs from full-size
# shards against shards written with `--max-side 512`, random-resized crops at 224 px, DALI CPU.
#
#   bash bench/max_side_check.sh [OUT_DIR]     # default bench-results/max-side-check
#
# Data: ../shared/data/flowers-photos.tar (600 photographs, median 320x240) extracted into $DATA
# (default /tmp/data), each upscaled to 4000 px on its longer side at JPEG quality 90
# (scripts/make_large_photos.py: 3-16 MP, median 11.6 MP, decoded like real 12 MP JPEGs, not their
# content), packed twice: as they are, and with --max-side 512. Both runs read the same photographs
# in the same order; only the stored size differs. Run it on a quiet machine.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-bench-results/max-side-check}"
data="${DATA:-/tmp/data}"
threads="${THREADS:-2}"
side="${MAX_SIDE:-512}"
mkdir -p "$out"
source bench/common.sh
tarball="${FLOWERS:-../shared/data/flowers-photos.tar}"
if [[ ! -d "$data/flowers/train" ]]; then
    [[ -f "$tarball" ]] || { missing_data "the photographs' tarball" "$tarball" "set FLOWERS to a tar of \
flowers/train/<class>/*.jpg and flowers/val/<class>/*.jpg"; exit 2; }
    mkdir -p "$data" && tar -xf "$tarball" -C "$data" || exit 1
fi
[[ -d "$data/flowers-12mp/train" ]] ||
    step make-12mp "$python" scripts/make_large_photos.py "$data/flowers" "$data/flowers-12mp"
[[ -f "$data/flowers-12mp-shards/classes.json" ]] ||
    step shards-full "$python" -m pipeline.data.shards "$data/flowers-12mp" "$data/flowers-12mp-shards" \
        --shard-size 100 --workers "$threads"
[[ -f "$data/flowers-12mp-$side-shards/classes.json" ]] ||
    step "shards-$side" "$python" -m pipeline.data.shards "$data/flowers-12mp" "$data/flowers-12mp-$side-shards" \
        --shard-size 100 --workers "$threads" --max-side "$side"
tar -cf - -C "$data" flowers-12mp-shards "flowers-12mp-$side-shards" > /dev/null  # warm the page cache

rrc=(data.source=webdataset data.train.kind=random_resized_crop data.train.crop=224 data.eval.size=256
     data.eval.crop=224 train.global_batch_size=16 wandb.mode=disabled "data.num_threads=$threads")
git rev-parse --short=12 HEAD > "$out/git-revision.txt"
for shards in flowers-12mp-shards "flowers-12mp-$side-shards"; do
    step "loader-$shards" "$python" -m pipeline.bench loader "${rrc[@]}" "data.root=$data/$shards" \
        --backends=dali-cpu --stages --steps 8 --warmup 2 --repeats 3 --out="$out/$shards"
done
exit $status
