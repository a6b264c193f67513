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


class MetricWriter:
    """Scalars to `metrics.jsonl` + TensorBoard; images to TensorBoard."""

    def __init__(self, workdir: str, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self._events = None
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

    def flush(self) -> None:
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None


def read_jsonl(path: str) -> list[dict]:
    """All records of a `metrics.jsonl` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
