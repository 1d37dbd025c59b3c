"""Bad checkpoints, tried in bulk: torch.save'd dicts with missing or wrong-typed entries, random and
truncated bytes, zip files with bad members, pickles that would run code.

Through the public readers: `checkpoint.load`, a run folder's `find_resume` (what resuming does first),
`read_weights` and `open_classifier` (what `pipeline.export` and `pipeline.predict` do first), then a
few through `python -m pipeline.predict` and `python -m pipeline.export`. Every case ends in a
checkpoint that works or one CheckpointError (UserError) line naming the file or run; the files are
never changed and no pickle runs code (a marker file says so).
Cases per CI run: see each `@cases(n)`; tests/fuzz.py says how to explore further.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, encode_image, smooth_image, write_imagefolder
from fuzz import Scratch, assert_one_line, cases, code_running_pickles, folder_digest
from hypothesis import event, example, given
from hypothesis import strategies as st

from models import build_model
from pipeline.config import load_config
from pipeline.deploy.source import open_classifier
from pipeline.distributed import DistInfo
from pipeline.errors import CheckpointError, UserError
from pipeline.training import checkpoint as ckpt_io
from pipeline.training.weights import WEIGHTS_KEYS, read_weights
from runs import run_env

# torch.load's note on the protocol-4 pickles some cases are made of: they are refused or loaded all the same.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")


SCRATCH = Scratch("fuzz-checkpoint-")


WORK = SCRATCH.root


MARKER = WORK / "a-pickle-ran"


# The run's data: three classes of one image each (a checkpoint without class names lists them from here).
TREE = write_imagefolder(WORK / "tree", {split: {"ant": 1, "bee": 1, "cat": 1} for split in ("train", "val")})


CONFIG = load_config(None, ["model.num_classes=3", "model.name=squeezenet1_1", "train.epochs=4",
                            "schedule.milestones=[]", "data.eval.size=24", "data.eval.crop=24",
                            "data.source=imagefolder", f"data.root={TREE}"])


CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@cache
def payload() -> dict:
    """A whole checkpoint as CheckpointManager writes it (a 3-class squeezenet1_1 after 6 steps of epoch 2)."""
    model = build_model("squeezenet1_1", num_classes=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    config = CONFIG.to_dict()
    counters = asdict(ckpt_io.Counters(epoch=1, step_in_epoch=6, global_step=16, best_top1=0.5, best_epoch=1,
                                       final={"val/top1": 0.5, "val/top5": 1.0, "val/loss": 1.0, "epoch": 1}))
    return {"format_version": ckpt_io.FORMAT_VERSION, "code_revision": "0123456789ab", "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": {"last_epoch": 16}, "scaler": None, "ema": None,
            "counters": counters, "config": config, "world_size": 1,
            "rank_states": [{"loader": {"epoch": 1, "step": 6}, "rng": ckpt_io.rng_state(CPU.device), "digest": None}],
            "plan": None, "classes": ["ant", "bee", "cat"], "eval_transform": ckpt_io.eval_transform_of(config),
            "init_from": None}


def saved(obj: object, **kwargs) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


@cache
def valid_file() -> bytes:
    return saved(payload())


# Where an entry may be missing or wrong: top-level keys, and the nested ones the readers look into.
PATHS = [(key,) for key in payload()] + [
    ("counters", "epoch"), ("counters", "step_in_epoch"), ("counters", "global_step"), ("counters", "final"),
    ("counters", "eval_pending"), ("config", "model"), ("config", "model", "name"), ("config", "model", "num_classes"),
    ("config", "model", "dropout"), ("config", "data"), ("config", "data", "eval"), ("config", "data", "source"),
    ("config", "eval"), ("config", "checkpoint"), ("config", "train"), ("model", "classifier.1.weight"),
    ("model", "features.0.bias"), ("eval_transform", "crop"), ("eval_transform", "mean"), ("rank_states", 0),
    ("classes", 0)]


PLAIN = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([2**63, -(2**70), 10**30]),
                  st.floats(), st.text(max_size=6), st.sampled_from(["squeezenet1_1", "auto", "synthetic", ""]),
                  st.binary(max_size=4),
                  st.sampled_from([torch.zeros(0), torch.tensor(1.5), torch.ones(3, dtype=torch.int64),
                                   torch.zeros(2, 2, dtype=torch.float16), torch.ones(1, dtype=torch.bool)]))


VALUES = st.recursive(PLAIN, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["epoch", "model", "name", "num_classes", "global_step", "weight", "size", 0]), inner,
    max_size=3), max_leaves=6)


def edited(base: dict, path: tuple, value: object, delete: bool) -> dict:
    """A copy of `base` with the entry at `path` deleted or replaced (the containers along it copied)."""
    out = dict(base)
    node = out
    for step in path[:-1]:
        if isinstance(node, dict) and step in node:
            child = node[step]
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            child = node[step]
        else:
            return out
        if not isinstance(child, (dict, list)):
            return out
        child = dict(child) if isinstance(child, dict) else list(child)
        node[step] = child
        node = child
    last = path[-1]
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(last, int) and last < len(node)):
        if delete:
            if isinstance(node, dict):
                node.pop(last, None)
            else:
                del node[last]
        else:
            node[last] = value
    return out


def zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {name: z.read(name) for name in z.namelist()}


def rezip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@dataclass(frozen=True)
class Damage:
    """How a case's file is made (printed by Hypothesis as the failing case, usable as an @example):

    edited: the whole checkpoint, `args` ((path, value, delete), ...) applied in turn; object: torch.save of
    args[0]; bytes: args[0] as they are; cut: the valid file's first args[0] bytes; zip: the valid file with
    member args[0] dropped, cut to args[1] bytes or replaced by args[1]; code: code_running_pickles()[args[0]]."""

    kind: str
    args: tuple = ()

    def data(self) -> bytes:
        if self.kind == "edited":
            ckpt = payload()
            for path, value, delete in self.args:
                ckpt = edited(ckpt, path, value, delete)
            return saved(ckpt)
        if self.kind == "object":
            return saved(self.args[0])
        if self.kind == "bytes":
            return self.args[0]
        if self.kind == "cut":
            return valid_file()[:self.args[0]]
        if self.kind == "zip":
            members = zip_members(valid_file())
            name = next(n for n in members if n.endswith(self.args[0]))
            if len(self.args) == 1:
                del members[name]
            else:
                members[name] = members[name][:self.args[1]] if isinstance(self.args[1], int) else self.args[1]
            return rezip(members)
        return code_running_pickles(MARKER)[self.args[0]]


MEMBERS = ("data.pkl", "version", ".format_version", "byteorder", "data/0", "data/7", "data/50")


@st.composite
def damages(draw: st.DrawFn) -> Damage:
    """A file named like a checkpoint: ours with entries missing or of other types, another object, random or
    cut bytes, the zip with a member dropped, cut or replaced (a random or code-running pickle), or a plain
    pickle that runs code when loaded unsafely."""
    kind = draw(st.sampled_from(("edited",) * 4 + ("object", "bytes", "cut", "zip", "code")))
    if kind == "edited":
        return Damage(kind, tuple(draw(st.lists(st.tuples(st.sampled_from(PATHS), VALUES, st.booleans()), min_size=1,
                                                max_size=3))))
    if kind == "object":
        return Damage(kind, (draw(VALUES),))
    if kind == "bytes":
        return Damage(kind, (draw(st.binary(max_size=300)),))
    if kind == "cut":
        return Damage(kind, (draw(st.integers(0, len(valid_file()) - 1)),))
    if kind == "zip":
        member = draw(st.sampled_from(MEMBERS))
        change = draw(st.sampled_from(("drop", "cut", "pickle", "code", "junk")))
        if change == "drop":
            return Damage(kind, (member,))
        if change == "cut":
            return Damage(kind, (member, draw(st.integers(0, 200))))
        if change == "pickle":
            return Damage(kind, (member, pickle.dumps(draw(VALUES.filter(lambda v: not isinstance(v, torch.Tensor))))))
        if change == "code":
            return Damage(kind, ("data.pkl", draw(st.sampled_from(code_running_pickles(MARKER)))))
        return Damage(kind, (member, draw(st.binary(max_size=64))))
    return Damage(kind, (draw(st.integers(0, len(code_running_pickles(MARKER)) - 1)),))


def write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


fresh = SCRATCH.case


RUN_FILES = ("last.pt", "best.pt", "step-00000004.pt")


@pytest.fixture(scope="module")
def image_file() -> Path:
    path = WORK / "images" / "x.jpg"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(encode_image(smooth_image(np.random.default_rng(0), 24)))
    return path


def refused_in_one_line(proc: subprocess.CompletedProcess, prefix: str, path: Path) -> None:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-3000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(prefix) and str(path) in last, proc.stderr[-3000:]


def refused_by_the_readers(damage: Damage) -> bool:
    """Whether read_weights or the config check refuses this file (in this process)."""
    path = fresh("filter") / "best.pt"
    write(path, damage.data())
    try:
        read_weights(path, "ema").run_config()
    except UserError:
        return True
    return False


# A few cases only: each starts an interpreter that imports torch (seconds); the readers' breadth is above.
REFUSED = damages().filter(refused_by_the_readers)


def test_the_unedited_checkpoint_is_read_by_every_reader():
    """The base every case starts from works: otherwise the properties below would only test refusals."""
    path = fresh("valid") / "last.pt"
    write(path, valid_file())
    assert ckpt_io.load(path)["counters"]["global_step"] == 16
    manager = ckpt_io.CheckpointManager(CONFIG.checkpoint, path.parent, CPU, CONFIG.to_dict(), CONFIG.train.epochs)
    assert manager.find_resume().path == path
    assert open_classifier(path).classes == ["ant", "bee", "cat"]


@cases(200)
@given(damages(), st.sampled_from(["resume", "weights"]))
@example(Damage("edited", ((("format_version",), [torch.zeros(2, 2)], False),)), "weights")  # found: a 2-line message
@example(Damage("edited", ((("format_version",), torch.zeros(0), False),)), "resume")  # RuntimeError, by hand
def test_a_checkpoint_file_loads_or_is_refused_in_one_line_naming_it_and_runs_no_code(damage, reader):
    path = fresh("load") / "last.pt"
    digest = write(path, damage.data())
    try:
        ckpt = ckpt_io.load(path, ckpt_io.REQUIRED_KEYS if reader == "resume" else WEIGHTS_KEYS)
        event("loaded")
        assert isinstance(ckpt, dict)
    except CheckpointError as exc:
        event("refused")
        assert_one_line(str(exc), [str(path)])
    assert not MARKER.exists(), "loading a checkpoint ran code"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@cases(80)
@given(st.dictionaries(st.sampled_from(RUN_FILES), damages() | st.just(Damage("cut", (len(valid_file()),))),
                       min_size=1, max_size=3))
@example({"last.pt": Damage("bytes", (b"",)), "best.pt": Damage("edited", ((("config",), None, False),))})  # found:
# AttributeError in config_differences; and with counters or rank_states of another type, RuntimeError, IndexError
@example({"last.pt": Damage("edited", ((("counters", "global_step"), torch.zeros(0), False),))})
@example({"step-00000004.pt": Damage("edited", ((("rank_states",), [], False),))})
@example({"last.pt": Damage("edited", ((("counters", "weight"), 1, False),))})
@example({"last.pt": Damage("edited", ((("config", "data", "eval"), None, False),))})  # other values: not accepted
@example({"last.pt": Damage("edited", ((("rank_states", 0), {"epoch": None}, False),))})  # found (explore): KeyError
def test_a_run_of_odd_checkpoints_resumes_from_one_that_works_or_is_refused_unchanged(files):
    run_dir = fresh("run")
    for name, damage in files.items():  # Damage("cut", (len(valid_file()),)): the valid file whole
        write(run_dir / name, damage.data())
    (run_dir / "config.yaml").write_text(CONFIG.to_yaml())
    (run_dir / "metrics.jsonl").write_text('{"step": 16}\n')
    before = folder_digest(run_dir)
    manager = ckpt_io.CheckpointManager(CONFIG.checkpoint, run_dir, CPU, CONFIG.to_dict(), CONFIG.train.epochs)
    try:
        resume = manager.find_resume()
        event("resumed" if resume else "starts over")
        if resume is not None:  # what the trainer reads of it before restoring
            assert resume.epoch >= 0 and resume.path.parent == run_dir
            resume.loader_state(CPU)
            ckpt_io.Counters(**resume.ckpt["counters"])
    except UserError as exc:  # CheckpointError; ConfigError for a saved config whose values differ
        event(f"refused: {type(exc).__name__}")
        assert_one_line(str(exc), [str(run_dir), f"run {run_dir.name} "])
    assert not MARKER.exists(), "resuming ran code"
    assert folder_digest(run_dir) == before


@cases(80)
@given(damages())
@example(Damage("edited", ((("config", "data"), None, False),)))  # found: a config error not naming the file
@example(Damage("edited", ((("config", "model"), {}, False),)))  # found: KeyError 'num_classes'
@example(Damage("edited", ((("config", "model", "num_classes"), "", False),)))  # found: ValueError from int('')
@example(Damage("edited", ((("counters", "final"), True, False),)))  # found: TypeError in recorded_result
@example(Damage("edited", ((("classes",), torch.ones(3, dtype=torch.int64), False),)))  # found: a tensor of names
@example(Damage("edited", ((("model", "classifier.1.weight"), "x", False),)))  # by hand: weights not tensors
@example(Damage("edited", ((("eval_transform", "crop"), float("inf"), False),)))  # by hand: OverflowError
def test_export_and_predict_read_a_checkpoint_or_refuse_it_in_one_line(damage):
    """What `pipeline.export` and `pipeline.predict` do with a checkpoint before any data: the weights, the
    config, the network built and run on a batch."""
    path = fresh("weights") / "best.pt"
    digest = write(path, damage.data())
    try:
        source = read_weights(path, "ema")
        source.run_config()  # export reads the run's data and W&B settings
        classifier = open_classifier(path)
        crop = classifier.transform.crop
        if crop <= 256:  # a recorded crop of a million pixels a side is valid, and no batch to try here
            logits = classifier.run(np.zeros((2, crop, crop, 3), np.uint8))
            assert logits.shape == (2, len(classifier.classes))
        event("classifies")
    except UserError as exc:
        event(f"refused: {type(exc).__name__}")
        assert_one_line(str(exc), [str(path)])
    assert not MARKER.exists(), "reading the weights ran code"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@cases(1)
@given(REFUSED)
@example(Damage("edited", ((("config",), None, True),)))
def test_python_m_pipeline_predict_refuses_a_bad_checkpoint_in_one_line_and_exit_2(image_file, damage):
    path = fresh("predict") / "best.pt"
    digest = write(path, damage.data())
    proc = subprocess.run([sys.executable, "-m", "pipeline.predict", str(path), str(image_file)], cwd=REPO,
                          capture_output=True, text=True, timeout=180,
                          env=run_env())
    refused_in_one_line(proc, "predict error: ", path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest and not MARKER.exists()


def test_python_m_pipeline_export_refuses_a_bad_checkpoint_in_one_line_and_exit_2():
    """One case (the command imports torch and ONNX: seconds); predict's above is drawn, the readers' breadth is
    the properties'."""
    damage = Damage("code", (0,))
    folder = fresh("export")
    path, out = folder / "best.pt", folder / "export"
    digest = write(path, damage.data())
    proc = subprocess.run([sys.executable, "-m", "pipeline.export", str(path), "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=180,
                          env=run_env())
    refused_in_one_line(proc, "export error: ", path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest and not MARKER.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt"]  # nothing written

