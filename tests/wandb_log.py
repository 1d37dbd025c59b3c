"""Read what W&B actually wrote: the records of an offline run's .wandb file.

The .wandb file is W&B's transaction log (LevelDB log framing of protobuf `Record`s, see
wandb/sdk/internal/datastore.py in wandb <= 0.18). The reader lives in the tests so they can
check logged metrics without mocking wandb.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32768
FILE_HEADER = 7  # ":W&B" + magic (uint16) + version (uint8)
RECORD_HEADER = 7  # checksum (uint32) + length (uint16) + type (uint8)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending, payloads = FILE_HEADER, b"", []
    while pos + RECORD_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER:
            pos += left  # block trailer padding
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + RECORD_HEADER])
        pos += RECORD_HEADER
        chunk = data[pos:pos + length]
        pos += length
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            payloads.append(pending + chunk)
        elif kind == 0 and length == 0:
            pos += left - RECORD_HEADER  # zero padding to the end of the block
    return [wandb_internal_pb2.Record.FromString(p) for p in payloads]


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def offline_run(run_dir: Path) -> dict[str, Any]:
    """{"history": [{key: value}], "summary": {key: value}, "config": {key: value}} of the run's log."""
    logs = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert logs, f"no offline W&B run under {run_dir}/wandb"
    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}}
    for log in logs:
        for rec in read_records(log):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "summary":
                out["summary"].update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
            elif kind == "config":
                out["config"].update({_key(i): json.loads(i.value_json) for i in rec.config.update})
            elif kind == "run":
                out["run"] = rec.run
                out["config"].update({_key(i): json.loads(i.value_json) for i in rec.run.config.update})
    return out
