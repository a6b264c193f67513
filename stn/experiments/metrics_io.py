"""Run metrics to disk: a JSON-lines file and TensorBoard event files (no TensorFlow needed).

`MetricWriter(workdir)` appends one JSON object per `write_scalars` call to
`workdir/metrics.jsonl` (`{"step": ..., "loss": ..., ...}`) and writes the same scalars, and
PNG images, as TensorBoard summaries under `workdir/tensorboard/` with the `tensorboard`
package's own event-file writer and protos. Only process 0 writes in a multi-host run.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

import jax
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from stn.experiments import workdir as workdir_lib


class MetricWriter:
    """Scalars to `metrics.jsonl` + TensorBoard; images to TensorBoard."""

    def __init__(self, workdir: str, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.jsonl_path = os.path.join(workdir, workdir_lib.METRICS_FILE)
        self._events = None
        self._kept: set[tuple] = set()  # (step, keys) of the records kept by truncate_after
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._events = EventFileWriter(os.path.join(workdir, "tensorboard"))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """One JSON line and one TensorBoard event holding every scalar of this step."""
        if not self.enabled:
            return
        values = {k: float(v) for k, v in scalars.items()}
        record = {"step": int(step), **{k: (v if math.isfinite(v) else str(v))
                                        for k, v in values.items()}}
        if _identity(record) in self._kept:  # redone after a resume: replace, never repeat
            self._replace(record)
        else:
            with open(self.jsonl_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        summary = summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                               summary=summary))

    def write_png(self, step: int, tag: str, png: bytes, height: int, width: int) -> None:
        """A PNG image (already encoded) as a TensorBoard image summary."""
        if not self.enabled:
            return
        image = summary_pb2.Summary.Image(height=height, width=width, colorspace=3,
                                          encoded_image_string=png)
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])
        self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                               summary=summary))

    def truncate_after(self, step: int) -> None:
        """Drops the `metrics.jsonl` records of steps after `step` (a resume from an older
        checkpoint recomputes them, and the file must not hold them twice)."""
        if not self.enabled or not os.path.exists(self.jsonl_path):
            return
        kept = [r for r in read_jsonl(self.jsonl_path) if int(r.get("step", 0)) <= step]
        write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in kept))
        self._kept = {_identity(r) for r in kept}

    def _replace(self, record: dict) -> None:
        """Rewrites `metrics.jsonl` with `record` in place of the kept one of its step and keys
        (an evaluation redone by a resumed or evaluating-only rerun is held once)."""
        records = [record if _identity(r) == _identity(record) else r
                   for r in read_jsonl(self.jsonl_path)]
        write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in records))
        self._kept.discard(_identity(record))

    def flush(self) -> None:
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None


def _identity(record: Mapping) -> tuple:
    """What makes a metrics record one event: its step and the names it holds."""
    return int(record.get("step", 0)), frozenset(k for k in record if k != "step")


def recorded_keys(path: str, step: int) -> set[str]:
    """Every metric name recorded at `step` in the `metrics.jsonl` at `path` (empty if none)."""
    if not os.path.exists(path):
        return set()
    return {k for r in read_jsonl(path) if int(r.get("step", 0)) == step for k in r} - {"step"}


def read_jsonl(path: str) -> list[dict]:
    """All records of a `metrics.jsonl` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically (a temporary file, then a rename): a crash or a full
    disk leaves the old file or the new one, never half of one."""
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as e:  # name the file asked for, not the temporary one
        raise OSError(e.errno, e.strerror, path) from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path: str, record) -> None:
    """`record` as strict JSON (NaN and inf are refused: write null instead), atomically."""
    write_text(path, json.dumps(record, indent=2, allow_nan=False) + "\n")
