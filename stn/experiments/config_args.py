"""One parser for the `arg` of config files (`configs/mnist.py:rts,st_cnn`) and sweep files
(`configs/sweeps/lr_seed.py:lrs=0.01,0.03,seeds=3`).

An argument is comma-separated pieces:
- a bare word from one of the named `choices` groups picks that group's value
  (`rts` -> `distortion="rts"`; `distortion=rts` says the same);
- `key=value` sets a key, typed like its default (bool, int, float, str); a list or tuple default
  makes it a list (`lrs=0.01,0.03`);
- any other bare piece continues the previous `key=value` (list items, or commas inside a string
  value such as `config=configs/mnist.py:rts,st_cnn`).
Every mistake is a one-line ValueError naming what is accepted.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections


def parse(arg: str | None, *, where: str, choices: Mapping[str, Sequence[str]] | None = None,
          **defaults: Any) -> dict[str, Any]:
    """Parses `arg` into `{key: value}` for every choice group and default (see module doc).

    Args:
      arg: the text after the file's `:` (None or empty: all defaults).
      where: what the argument belongs to, for messages (e.g. "configs/mnist.py").
      choices: group name -> the words it accepts; a group's default is `defaults[group]`.
      **defaults: every key's default value; choice groups need one too.
    """
    choices = dict(choices or {})
    group_of = {word: group for group, words in choices.items() for word in words}
    raw: dict[str, list[str]] = {}
    picked: dict[str, str] = {}
    last = None
    for piece in (arg or "").split(","):
        word = piece.strip()
        if not word:
            continue
        if "=" in word:
            last, value = (part.strip() for part in word.split("=", 1))
            if last in choices:  # `group=word` picks like the bare word
                if value.lower() not in choices[last]:
                    raise ValueError(f"{where}: {last}={value!r}; expected one of "
                                     f"{', '.join(choices[last])}")
                picked[last], last = value.lower(), None
                continue
            if last not in defaults:
                raise ValueError(f"{where}: unknown argument {last!r}; expected "
                                 f"{_accepted(choices, defaults)}")
            raw[last] = [value]
        elif word.lower() in group_of:
            picked[group_of[word.lower()]] = word.lower()
        elif last is not None:
            raw[last].append(word)
        else:
            raise ValueError(f"{where}: unknown part {word!r} in {arg!r}; expected "
                             f"{_accepted(choices, defaults)}")
    out = dict(defaults)
    out.update(picked)
    for key, pieces in raw.items():
        out[key] = _typed(where, key, pieces, defaults[key])
    return out


def _accepted(choices: Mapping[str, Sequence[str]], defaults: Mapping[str, Any]) -> str:
    groups = [f"{group} ({', '.join(words)})" for group, words in choices.items()]
    keys = sorted(k for k in defaults if k not in choices)
    if keys:
        groups.append(f"key=value for {', '.join(keys)}")
    return "; ".join(groups) or "nothing"


def _typed(where: str, key: str, pieces: list[str], default: Any) -> Any:
    """The raw pieces of one argument converted to the type of its default."""
    if isinstance(default, (list, tuple)):
        kind = type(default[0]) if default else str
        return [_scalar(where, key, p, kind) for p in pieces]
    text = ",".join(pieces)
    return text if default is None else _scalar(where, key, text, type(default))


def _scalar(where: str, key: str, text: str, kind: type) -> Any:
    """One value of type `kind` from text, with a one-line error naming the key."""
    text = text.strip()
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        return kind(text)
    except ValueError:
        raise ValueError(f"{where}: {key}={text!r}: expected a {kind.__name__}") from None


def run_sections(**train: Any) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """The `train` and `eval` sections every config has, with the trainer's defaults.

    Keyword arguments set `train.*` fields, and `eval_batch_size` sets `eval.batch_size`;
    `steps`, `batch_size`, `learning_rate` and `lr_decay_every` are required (they are each
    experiment's recipe). Having every field in every config lets the command line override it.
    """
    missing = {"steps", "batch_size", "learning_rate", "lr_decay_every"} - set(train)
    if missing:
        raise TypeError(f"run_sections needs {', '.join(sorted(missing))}")
    evaluation = ml_collections.ConfigDict({
        "batch_size": train.pop("eval_batch_size", 500),
        "test_during_training": False,  # True: the test set too at every evaluation
    })
    fields = {
        "optimizer": "sgd",  # or "adam" (stn.experiments.training.base_optimizer)
        "momentum": 0.0, "weight_decay": 0.0,
        "grad_clip_norm": 0.0,  # > 0: rescale the gradient to at most this global norm
        "lr_decay_factor": 0.1,  # the lr is multiplied by it every lr_decay_every steps
        "loss_limit": 1e4,  # a larger (finite) training loss stops the run as diverged
        "log_every": 100, "eval_every": 10_000, "checkpoint_every": 5_000, "keep_checkpoints": 3,
        "num_images": 16,  # test inputs in the picture at each evaluation
        "max_steps_in_flight": 0,  # 0: 50 on a GPU/TPU, 1 on the CPU
    }
    unknown = set(train) - set(fields) - missing - {"steps", "batch_size", "learning_rate",
                                                    "lr_decay_every"}
    if unknown:
        raise TypeError(f"run_sections got unknown train fields {sorted(unknown)}")
    fields.update(train)
    return ml_collections.ConfigDict(fields), evaluation
