# Shared by bench/device_check.sh, bench/cpu_check.sh and bench/photo_check.sh (sourced from the
# repository root): the Python to use, `step` (run, log, time, keep going), `prepare_data` and
# `prepare_photos`. Both read data a clone does not have; without it they say so in one line (what is
# missing, where it was looked for, how to get it) and return 2, before anything else runs.
#
# Expects: $out (the results folder). Sets: $python, $status (1 once a step failed).
python="${PYTHON:-python3}"
[[ -x .venv/bin/python && -z "${PYTHON:-}" ]] && python=.venv/bin/python
status=0

step() {  # step NAME COMMAND...: run, keep going on failure, log to $out/NAME.log and time it
    local name="$1"; shift
    local t0=$SECONDS
    echo "=== $name: $*" | tee "$out/$name.log" >&2
    "$@" 2>&1 | tee -a "$out/$name.log" >&2 || status=1
    echo "=== $name: $((SECONDS - t0)) s" >&2
}

missing_data() {  # missing_data WHAT PATH HOW: the one line that says which data is missing and how to get it
    echo "$(basename "$0"): $1 not found at $2 (a clone of the repository does not have it): $3" >&2
    return 2
}

prepare_data() {  # prepare_data DATA TARBALL: the JPEG tree in DATA/cifar10, the arrays in DATA/cifar-py
    local data="$1" tarball="$2"
    if [[ ! -d "$data/cifar10/train" ]]; then
        [[ -f "$tarball" ]] || missing_data "the CIFAR-10 JPEG tarball" "$tarball" "write one from the official \
CIFAR-10 archive (downloaded, 163 MB) with '$python scripts/make_cifar_jpeg.py $data/cifar-py $data/cifar10-jpeg.tar.gz', \
then set CIFAR_JPEG=$data/cifar10-jpeg.tar.gz" || return 2
        mkdir -p "$data" && tar -xzf "$tarball" -C "$data" || { echo "cannot extract $tarball" >&2; return 1; }
    fi
    [[ -f "$data/cifar-py/cifar-10-python.tar.gz" ]] || "$python" scripts/make_cifar_archive.py "$tarball" "$data/cifar-py"
    # Read every file once: the first backend measured must not pay for a cold page cache alone
    # (BENCHMARKS.md, "CPU after the loader rework": the cold run's ratio was well below the warm ones).
    tar -cf - -C "$data" cifar10 > /dev/null
}

prepare_photos() {  # prepare_photos DATA TARBALL: the photographs x8 in DATA/flowers-x8 and as shards in DATA/flowers-x8-shards
    # flowers-photos.tar has 400 training photographs: an epoch of a few batches, whose ends (DALI's
    # pipeline reset) would weigh in every measurement. Eight hard-linked copies of each training
    # photograph make 3,200 (the decode work per image is the same; the page cache holds one copy).
    local data="$1" tarball="$2"
    if [[ ! -d "$data/flowers/train" ]]; then
        [[ -f "$tarball" ]] || missing_data "the photographs' tarball" "$tarball" "set FLOWERS to a tar of \
flowers/train/<class>/*.jpg and flowers/val/<class>/*.jpg (BENCHMARKS.md used 600 photographs of TensorFlow's \
flower_photos, 80 training and 40 validation per class)" || return 2
        mkdir -p "$data" && tar -xf "$tarball" -C "$data" || { echo "cannot extract $tarball" >&2; return 1; }
    fi
    if [[ ! -d "$data/flowers-x8/train" ]]; then
        (cd "$data/flowers" && for f in train/*/*.jpg; do
            mkdir -p "../flowers-x8/$(dirname "$f")"
            for c in 0 1 2 3 4 5 6 7; do ln -f "$f" "../flowers-x8/$(dirname "$f")/${c}_$(basename "$f")"; done
        done && cp -r val ../flowers-x8/val)
    fi
    [[ -f "$data/flowers-x8-shards/classes.json" ]] ||
        "$python" -m pipeline.data.shards "$data/flowers-x8" "$data/flowers-x8-shards" --shard-size 256 --workers 2
    tar -cf - -C "$data" flowers flowers-x8-shards > /dev/null  # warm the page cache, as prepare_data does
}
