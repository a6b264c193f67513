"""Checkpoints that verify everywhere: a checkpoint that fails verification is moved
aside and saved anew, one without a digest is not trusted, eval.py verifies as training does and
evaluates only the run's own config, a full disk is one line, another model's shapes are named.

Each test copies one short run (the small ST-FCN of tests/test_training.py, checkpoints at steps
2, 4 and 6) and damages the copy as a disk, a user or a hostile machine would.
"""
import errno
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from stn.experiments import checkpointing, evaluation, tasks, training

import helpers

ENV = dict({k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, JAX_PLATFORMS="cpu")


def run_config(data_dir, **train):
    """The base run's config (steps 6, checkpoints every 2), with `train` fields changed."""
    return helpers.small_config(data_dir, **{"steps": 6, "checkpoint_every": 2, "eval_every": 100,
                                        **train})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """`(data_dir, workdir, results)` of a finished run with checkpoints 2, 4 and 6."""
    root = tmp_path_factory.mktemp("verify")
    data_dir = helpers.write_pattern_set(root / "data")
    results = training.train_and_evaluate(run_config(data_dir), str(root / "run"))
    return data_dir, root / "run", results


@pytest.fixture
def run(base, tmp_path):
    """A copy of the base run to damage: `(data_dir, workdir, base results)`."""
    data_dir, workdir, results = base
    shutil.copytree(workdir, tmp_path / "run")
    return data_dir, tmp_path / "run", results


def states(config):
    """Fresh `(params, opt_state)` of the config's model and optimizer."""
    _, _, state = helpers.fresh_model(config)
    tx, _ = training.make_optimizer(config, state, None)
    return state, tx.init(state)


def verified_steps(workdir, config):
    """The steps of `workdir` whose checkpoints restore and verify, and every step."""
    params, opt_state = states(config)
    mngr = checkpointing.manager(str(workdir), read_only=True)
    good = []
    for step in mngr.all_steps():
        try:
            checkpointing.restore(mngr, step, params, opt_state)
            good.append(step)
        except checkpointing.CheckpointError:
            pass
    return sorted(good), sorted(mngr.all_steps())


def data_files(step_dir, item="params"):
    """The data files of one item of a checkpoint, smallest first."""
    return sorted((p for p in (step_dir / item).rglob("*") if p.is_file()
                   and p.parent.name == "d"), key=lambda p: p.stat().st_size)


def swap_params(checkpoints, source, target):
    """`cp -r source/params target/params`: target's metadata is left as it was."""
    shutil.rmtree(checkpoints / str(target) / "params")
    shutil.copytree(checkpoints / str(source) / "params", checkpoints / str(target) / "params")


def edit_meta(checkpoints, step, edit):
    path = checkpoints / str(step) / "meta" / "metadata"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def good_checkpoint(workdir, config, step):
    """`(params, opt_state, meta)` of a checkpoint that verifies, restored."""
    params, opt_state = states(config)
    mngr = checkpointing.manager(str(workdir), read_only=True)
    good_params, good_opt = checkpointing.restore(mngr, step, params, opt_state)
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    return good_params, good_opt, meta


def rewrite(workdir, step, params, opt_state, meta):
    """Checkpoint `step` replaced by a well-formed one holding these trees and this metadata,
    as another program (or a hostile machine) would write it; the manager that wrote it."""
    shutil.rmtree(workdir / "checkpoints" / str(step))
    mngr = checkpointing.manager(str(workdir), max_to_keep=None)
    mngr.save(step, force=True, args=ocp.args.Composite(  # force: also below the newest step
        params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
        meta=ocp.args.JsonSave(meta)))
    mngr.wait_until_finished()
    assert step in mngr.all_steps()
    return mngr


def replace_leaf(tree, name, value):
    """`tree` with its leaf at path `name` (`checkpointing.path_name`) replaced by `value`."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: value if checkpointing.path_name(path) == name else x, tree)


def assert_same_params(workdir_a, workdir_b, config):
    for a, b in zip(helpers.final_params(workdir_a, config),
                    helpers.final_params(workdir_b, config)):
        np.testing.assert_array_equal(a, b)


def rerun(data_dir, workdir, capsys):
    """The same command again: `(results, stdout lines)`."""
    capsys.readouterr()
    results = training.train_and_evaluate(run_config(data_dir), str(workdir))
    return results, capsys.readouterr().out.splitlines()




def test_a_truncated_newest_checkpoint_is_set_aside_and_saved_anew(run, base, capsys):
    data_dir, workdir, _ = run
    checkpoints = workdir / "checkpoints"
    largest = data_files(checkpoints / "6")[-1]
    os.truncate(largest, 1000)  # `truncate -s 1000` the largest file
    results, out = rerun(data_dir, workdir, capsys)
    assert results["resumed_from_step"] == 4
    moved = [line for line in out if "moved aside" in line]
    assert len(moved) == 1 and moved[0].startswith("checkpoint 6 is unreadable"), out
    kept = checkpoints / "6.corrupt-unreadable"
    assert kept.is_dir() and os.path.getsize(kept / largest.relative_to(checkpoints / "6")) == 1000
    # The rerun ends with its newest checkpoint saved anew and verified, as the straight run's.
    config = run_config(data_dir)
    assert verified_steps(workdir, config) == ([2, 4, 6], [2, 4, 6])
    assert_same_params(workdir, base[1], config)
    assert evaluation.evaluate_checkpoint(None, str(workdir))["step"] == 6


def test_garbage_metadata_and_deleted_files_fall_back_to_step_0_and_all_are_saved_anew(
        run, base, capsys):
    data_dir, workdir, _ = run
    checkpoints = workdir / "checkpoints"
    (checkpoints / "6" / "meta" / "metadata").write_bytes(b"\x00garbage{")
    data_files(checkpoints / "4")[-1].unlink()
    data_files(checkpoints / "2", "opt_state")[-1].unlink()
    results, out = rerun(data_dir, workdir, capsys)
    assert results["resumed_from_step"] == 0
    assert len([line for line in out if "moved aside" in line]) == 3
    assert any(line.startswith("no checkpoint in ") and "starting from step 0" in line
               for line in out)
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "2", "2.corrupt-unreadable", "4", "4.corrupt-unreadable", "6", "6.corrupt-unreadable"]
    config = run_config(data_dir)
    assert verified_steps(workdir, config) == ([2, 4, 6], [2, 4, 6])
    assert_same_params(workdir, base[1], config)


@pytest.mark.slow
def test_a_step_set_aside_twice_keeps_both_copies(run, capsys):
    data_dir, workdir, _ = run
    checkpoints = workdir / "checkpoints"
    for _ in range(2):
        (checkpoints / "6" / "meta" / "metadata").write_bytes(b"{")
        rerun(data_dir, workdir, capsys)
    assert {"6.corrupt-unreadable", "6.corrupt-unreadable.2"} <= set(os.listdir(checkpoints))
    assert verified_steps(workdir, run_config(data_dir))[0] == [2, 4, 6]


def test_a_third_corrupt_copy_of_one_step_is_set_aside_beside_the_other_two(run):
    """Each copy keeps its own folder (`.2`, `.3`, ...), whatever the number already there."""
    _, workdir, _ = run
    checkpoints = workdir / "checkpoints"
    mngr = checkpointing.manager(str(workdir), max_to_keep=None)
    for copy in range(3):
        if copy:  # another corrupt step 6, as a third rerun on a failing disk would meet it
            shutil.copytree(checkpoints / "4", checkpoints / "6")
        (checkpoints / "6" / f"copy_{copy}").write_text("")
        checkpointing.set_aside(mngr, 6, "digest")
    for copy, name in enumerate(["6.corrupt-digest", "6.corrupt-digest.2",
                                 "6.corrupt-digest.3"]):
        assert (checkpoints / name / f"copy_{copy}").exists(), sorted(os.listdir(checkpoints))
    assert mngr.all_steps() == [2, 4]


# ----------------------------------------------------------------------------- items 3 and 4


def test_a_checkpoint_without_its_digest_is_not_trusted(run, base, capsys):
    """Step 2's parameters copied over step 6's, and 6's digest deleted: the rerun must not
    report step 2's numbers as step 6's."""
    data_dir, workdir, _ = run
    checkpoints = workdir / "checkpoints"
    swap_params(checkpoints, 2, 6)
    edit_meta(checkpoints, 6, lambda meta: meta.pop("digest"))
    with pytest.raises(ValueError, match=r"checkpoint 6 has no digest .* cannot be verified; "
                                         r"it is not evaluated"):
        evaluation.evaluate_checkpoint(run_config(data_dir), str(workdir))
    results, out = rerun(data_dir, workdir, capsys)
    assert results["resumed_from_step"] == 4
    moved = [line for line in out if "moved aside" in line]
    assert len(moved) == 1 and moved[0].startswith("checkpoint 6 has no digest"), out
    assert (checkpoints / "6.corrupt-no-digest").is_dir()
    assert results["test_error"] == base[2]["test_error"]
    assert_same_params(workdir, base[1], run_config(data_dir))


def test_eval_verifies_the_digest(run):
    """The same swap with the digest left in place: eval.py refuses step 6 (it held step 2's
    parameters), in one line that says how to repair it; nothing is moved by eval."""
    data_dir, workdir, _ = run
    checkpoints = workdir / "checkpoints"
    swap_params(checkpoints, 2, 6)
    with pytest.raises(ValueError, match=r"checkpoint 6 does not match its digest .*; it is not "
                                         r"evaluated: rerun .* --checkpoint_step \(also saved: "
                                         r"\[2, 4\]\)") as e:
        evaluation.evaluate_checkpoint(run_config(data_dir), str(workdir))
    assert "\n" not in str(e.value)
    assert sorted(os.listdir(checkpoints)) == ["2", "4", "6"]
    assert evaluation.evaluate_checkpoint(None, str(workdir), step=4)["step"] == 4


def test_every_restore_goes_through_one_verifying_function(run, monkeypatch):
    """Training's resume and evaluation both call `checkpointing.restore` (digest, finiteness,
    paths and shapes), and nothing else reads a checkpoint's arrays."""
    data_dir, workdir, _ = run
    calls = []
    verify = checkpointing.restore

    def counting(mngr, step, params, opt_state=None):
        calls.append((step, opt_state is None))
        return verify(mngr, step, params, opt_state)

    monkeypatch.setattr(checkpointing, "restore", counting)
    config = run_config(data_dir)
    evaluation.evaluate_checkpoint(None, str(workdir))
    training.train_and_evaluate(config, str(workdir))
    assert calls == [(6, True), (6, False)]


def test_a_finite_change_fails_the_digest(run):
    """One mantissa byte of one parameter changed, the value still finite, rewritten as a
    well-formed checkpoint with the old metadata: only the digest can tell."""
    data_dir, workdir, _ = run
    config = run_config(data_dir)
    good_params, good_opt, meta = good_checkpoint(workdir, config, 6)
    name, value = list(checkpointing.named_leaves(good_params).items())[1]
    changed = np.array(value)
    changed.reshape(-1).view(np.uint8)[0] ^= 0x01  # the lowest mantissa byte (little-endian)
    assert np.isfinite(changed).all() and (changed != np.asarray(value)).sum() == 1
    mngr = rewrite(workdir, 6, replace_leaf(good_params, name, changed), good_opt, meta)
    params, opt_state = states(config)
    with pytest.raises(checkpointing.CorruptCheckpoint, match="checkpoint 6 does not match its "
                                                              "digest") as e:
        checkpointing.restore(mngr, 6, params, opt_state)
    assert e.value.reason == "digest"
    with pytest.raises(checkpointing.CorruptCheckpoint, match="does not match its digest"):
        checkpointing.restore(mngr, 6, params)  # evaluation's restore verifies it too


def test_the_digest_covers_each_arrays_path_dtype_and_shape():
    x = np.arange(12, dtype=np.float32)
    same_bytes = [{"a": x.reshape(3, 4)}, {"a": x.view(np.int32)}, {"b": x}]
    digests = {checkpointing.digest(tree) for tree in [{"a": x}, {"a": x + 1}, *same_bytes]}
    assert len(digests) == 5
    assert checkpointing.digest({"a": x.copy()}) == checkpointing.digest({"a": x})


def test_an_optimizer_array_saved_in_another_shape_fails_the_digest(run):
    """The same bytes of one momentum array saved in another shape, the old metadata kept:
    evaluation reads the optimizer state in its saved shapes, so only the digest can tell."""
    data_dir, workdir, _ = run
    config = run_config(data_dir)
    good_params, good_opt, meta = good_checkpoint(workdir, config, 6)
    name, value = next((n, v) for n, v in checkpointing.named_leaves(good_opt).items()
                       if np.ndim(v) == 2)
    reshaped = np.asarray(value).reshape(value.shape[::-1])
    mngr = rewrite(workdir, 6, good_params, replace_leaf(good_opt, name, reshaped), meta)
    params, _ = states(config)
    with pytest.raises(checkpointing.CorruptCheckpoint, match="does not match its digest"):
        checkpointing.restore(mngr, 6, params)


def test_a_nan_in_the_momentum_with_a_valid_digest_is_not_restored(run, capsys):
    """Finiteness covers the optimizer state too: a NaN in the momentum, its digest
    recomputed, is refused by evaluation and set aside by the rerun."""
    data_dir, workdir, results = run
    config = run_config(data_dir)
    good_params, good_opt, _ = good_checkpoint(workdir, config, 6)
    name = next(n for n in checkpointing.named_leaves(good_opt) if ".trace." in n)
    poisoned = np.array(checkpointing.named_leaves(good_opt)[name])
    poisoned.reshape(-1)[0] = np.nan
    bad_opt = replace_leaf(good_opt, name, poisoned)
    meta = {"step": 6, "digest": checkpointing.digest({"params": good_params,
                                                       "opt_state": bad_opt})}
    mngr = rewrite(workdir, 6, good_params, bad_opt, meta)
    params, opt_state = states(config)
    for target in (opt_state, None):
        with pytest.raises(checkpointing.CorruptCheckpoint,
                           match=rf"checkpoint 6 holds non-finite values \(first in "
                                 rf"opt_state\.{name}\)"):
            checkpointing.restore(mngr, 6, params, target)
    again, out = rerun(data_dir, workdir, capsys)
    assert again["resumed_from_step"] == 4
    assert (workdir / "checkpoints" / "6.corrupt-non-finite").is_dir()
    assert again["test_error"] == results["test_error"]


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("digest", [True, False])
def test_same_number_of_parameters_with_one_renamed_path_is_refused(run, digest):
    """A checkpoint whose parameters have the model's count but one other path: never loaded
    by position. With its digest it is another model's (named); without, it is unverified."""
    data_dir, workdir, _ = run
    config = run_config(data_dir)
    good_params, good_opt, meta = good_checkpoint(workdir, config, 4)
    renamed = nnx.to_pure_dict(good_params)
    renamed["classifier"]["output"] = {"bias": renamed["classifier"]["classifier"].pop("bias")}
    if not digest:
        meta.pop("digest")
    mngr = rewrite(workdir, 4, renamed, good_opt, meta)
    params, _ = states(config)
    error = checkpointing.OtherModelError if digest else checkpointing.CorruptCheckpoint
    message = ("the config's model has classifier.classifier.bias that the checkpoint lacks, "
               "and the checkpoint has classifier.output.bias" if digest else "has no digest")
    with pytest.raises(error, match=message):
        checkpointing.restore(mngr, 4, params)


def test_a_config_of_another_shape_names_the_parameter_and_both_shapes(run):
    """The run's config.json edited to 42x42 inputs (the same layer names, other shapes):
    one line naming a parameter and both shapes, not "unreadable"."""
    data_dir, workdir, _ = run
    path = workdir / "config.json"
    config = json.loads(path.read_text())
    config["data"]["distortion"] = "rts"
    path.write_text(json.dumps(config))
    with pytest.raises(checkpointing.OtherModelError,
                       match=r"checkpoint 6 was saved from another model: the checkpoint's "
                             r"parameter classifier\.hidden\.layers\.0\.kernel has shape "
                             r"\(784, 256\) float32, the config's model wants \(1764, 256\) "
                             r"float32") as e:
        evaluation.evaluate_checkpoint(None, str(workdir))
    assert "\n" not in str(e.value)
    proc = subprocess.run([sys.executable, "eval.py", f"--workdir={workdir}"], cwd=helpers.ROOT,
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"eval.py: {e.value}"]




@pytest.mark.parametrize("field,value,named", [
    ("data.validation_size", 300, "data.validation_size 100 -> 300"),
    ("model.kernel", "nearest", "model.kernel 'bilinear' -> 'nearest'"),
    ("seed", 1, "seed 0 -> 1"),
])
def test_eval_refuses_a_config_that_changes_the_numbers(run, field, value, named):
    data_dir, workdir, _ = run
    config = run_config(data_dir)
    section, _, key = field.rpartition(".")
    (config[section] if section else config)[key] = value
    before = sorted(os.listdir(workdir))
    with pytest.raises(ValueError, match=rf"is not the one the run in .* was trained with "
                                         rf"\({named}\); .*omit --config") as e:
        evaluation.evaluate_checkpoint(config, str(workdir), data="validation")
    assert "\n" not in str(e.value)
    assert sorted(os.listdir(workdir)) == before  # nothing written


def test_eval_accepts_fields_that_cannot_change_the_numbers(run):
    data_dir, workdir, results = run
    config = run_config(data_dir, log_every=3, checkpoint_every=3, num_images=0)
    config.eval.batch_size = 7
    got = evaluation.evaluate_checkpoint(config, str(workdir))
    assert got["test_error"] == pytest.approx(results["test_error"], abs=1e-9)


def test_eval_cli_refuses_another_config_in_one_line(run):
    data_dir, workdir, _ = run
    proc = subprocess.run(
        [sys.executable, "eval.py", f"--workdir={workdir}",
         "--config=configs/mnist.py:none,st_fcn,affine", "--config.data.validation_size=7000",
         "--config.model.kernel=nearest", "--data=validation"],
        cwd=helpers.ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval.py: the config is not the one"), lines
    for field in ("data.validation_size", "model.kernel"):
        assert field in lines[0]
    assert not (workdir / "eval").exists()




def addition_config(arg: str):
    spec = importlib.util.spec_from_file_location(
        "mnist_addition", os.path.join(helpers.ROOT, "configs", "mnist_addition.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_addition_evaluates_an_npz_file(tmp_path):
    """`--data=npz:FILE` for an addition run: a valid [N, 42, 42, 2] file is read (it raised
    AttributeError), a wrong shape or sum is one line."""
    config = addition_config("2xst_fcn,affine")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 42, 42, 2)).astype(np.uint8)
    labels = rng.integers(0, 19, 5)
    np.savez(tmp_path / "pairs.npz", image=images, label=labels)
    batch, tag = tasks.get("addition").load_eval_set(config, f"npz:{tmp_path}/pairs.npz")
    assert tag == "npz_pairs" and batch["image"].dtype == np.float32
    np.testing.assert_allclose(batch["image"], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(batch["label"], labels)
    np.savez(tmp_path / "small.npz", image=images[:, :28, :28], label=labels)
    with pytest.raises(ValueError,
                       match=r"'image' must be \[N, 42, 42, 2\] .* got \[5, 28, 28, 2\]"):
        tasks.get("addition").load_eval_set(config, f"npz:{tmp_path}/small.npz")
    np.savez(tmp_path / "sums.npz", image=images, label=labels + 19)
    with pytest.raises(ValueError, match="label"):
        tasks.get("addition").load_eval_set(config, f"npz:{tmp_path}/sums.npz")


@pytest.mark.slow
def test_eval_py_on_an_addition_run_reads_an_npz_file(tmp_path):
    """The README's `eval.py --workdir=RUN --data=npz:FILE` for an addition run, end to end."""
    config = addition_config("fcn,quick")
    config.train.update(steps=2, num_images=0, eval_every=100, checkpoint_every=100)
    training.train_and_evaluate(config, str(tmp_path / "run"))
    test, _ = tasks.get("addition").load_eval_set(config, "test")
    images = np.round(test["image"][:50] * 255).astype(np.uint8)
    np.savez(tmp_path / "pairs.npz", image=images, label=test["label"][:50])
    proc = subprocess.run([sys.executable, "eval.py", f"--workdir={tmp_path / 'run'}",
                           f"--data=npz:{tmp_path / 'pairs.npz'}"], cwd=helpers.ROOT,
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["num_examples"] == 50 and last["step"] == 2 and 0 <= last["test_error"] <= 1
    assert (tmp_path / "run" / "eval" / "step_2_npz_pairs.json").is_file()




def test_eval_prints_the_result_when_the_folder_cannot_be_written(run):
    data_dir, workdir, results = run
    (workdir / "eval").write_text("a file where eval.py writes its folder")
    with pytest.raises(evaluation.ResultNotSaved, match="the result was not saved") as e:
        evaluation.evaluate_checkpoint(None, str(workdir))
    assert e.value.result["test_error"] == pytest.approx(results["test_error"], abs=1e-9)
    proc = subprocess.run([sys.executable, "eval.py", f"--workdir={workdir}"], cwd=helpers.ROOT,
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["test_error"] == pytest.approx(results["test_error"], abs=1e-9)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval.py: the result was not saved: cannot "
                                                   "write ") and "eval" in lines[0], lines



# Orbax's array writer; patched to fail as a full disk does, inside orbax's worker threads.
ORBAX_WRITER = "orbax.checkpoint._src.serialization.serialization.async_serialize_from_host"


async def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "checkpoints/d/0123abcd")


def test_a_full_disk_while_saving_is_one_line(data_dir_fresh, tmp_path, monkeypatch, capfd):
    config = run_config(data_dir_fresh)
    params, opt_state = states(config)
    mngr = checkpointing.manager(str(tmp_path / "run"))
    checkpointing.save(mngr, 2, params, opt_state)
    monkeypatch.setattr(ORBAX_WRITER, _disk_full)
    capfd.readouterr()
    with pytest.raises(checkpointing.CheckpointError) as e:
        checkpointing.save(mngr, 4, params, opt_state)
    message = str(e.value)
    assert "\n" not in message and message.startswith("could not save checkpoint 4 in ")
    assert "the disk is full" in message and "newest saved checkpoint is step 2" in message
    assert "free space on that disk and rerun the same command" in message
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err + printed.out, printed.err[:2000]
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2"]  # no partial folder


@pytest.mark.slow
def test_a_full_disk_reaches_the_terminal_as_one_line_from_train_py(data_dir_fresh, tmp_path):
    script = ("import errno, runpy, sys\n"
              "import orbax.checkpoint._src.serialization.serialization as s\n"
              "async def full(*a, **k):\n"
              "    raise OSError(errno.ENOSPC, 'No space left on device', 'x')\n"
              "s.async_serialize_from_host = full\n"
              "sys.argv = ['train.py'] + sys.argv[1:]\n"
              "runpy.run_path('train.py', run_name='__main__')\n")
    proc = subprocess.run(
        [sys.executable, "-c", script, "--config=configs/mnist.py:none,st_fcn,affine",
         f"--config.data.source=idx:{data_dir_fresh}", "--config.data.distortion=none",
         "--config.data.validation_size=100", "--config.train.steps=2",
         "--config.train.batch_size=32", "--config.train.num_images=0",
         f"--workdir={tmp_path / 'run'}"],
        cwd=helpers.ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[:3000]
    assert lines[0].startswith("train.py: could not save checkpoint 2 in ")
    assert "free space on that disk and rerun the same command" in lines[0]


def test_a_save_below_the_newest_step_is_an_error_not_a_silent_skip(run):
    """Orbax skips a step older than its newest; a save that wrote nothing must say so."""
    data_dir, workdir, _ = run
    shutil.rmtree(workdir / "checkpoints" / "4")
    params, opt_state = states(run_config(data_dir))
    mngr = checkpointing.manager(str(workdir))
    with pytest.raises(checkpointing.CheckpointError,
                       match=r"^could not save checkpoint 4 in .*orbax did not save it \(the "
                             r"newest step is 6\)"):
        checkpointing.save(mngr, 4, params, opt_state)


@pytest.fixture(scope="module")
def data_dir_fresh(base):
    return base[0]


@pytest.mark.parametrize("content,what", [(b"{\n", "is not valid JSON"),
                                          (b"\xff\xfe", "is not valid JSON"),
                                          (b"[1, 2]", "holds a JSON list")])
def test_a_damaged_config_json_is_named_in_one_line(run, content, what):
    data_dir, workdir, _ = run
    path = workdir / "config.json"
    path.write_bytes(content)
    for attempt in (lambda: evaluation.evaluate_checkpoint(None, str(workdir)),
                    lambda: training.train_and_evaluate(run_config(data_dir), str(workdir))):
        with pytest.raises(ValueError, match=f"^{re.escape(str(path))} {what}") as e:
            attempt()
        assert "\n" not in str(e.value) and "another --workdir" in str(e.value)


def test_another_tasks_config_names_task_and_model_first(run):
    """An addition config on a classification run differs in dozens of fields: the message
    starts with the two that say what the run is."""
    _, workdir, _ = run
    other = addition_config("2xst_fcn,affine")
    first = r"\(task 'classification' -> 'addition', model.name 'st_fcn' -> '2xst_fcn', "
    with pytest.raises(ValueError, match=r"holds a run of another config " + first):
        training.train_and_evaluate(other, str(workdir))
    with pytest.raises(ValueError, match=r"was trained with " + first):
        evaluation.evaluate_checkpoint(other, str(workdir))


def test_eval_without_the_runs_config_json_is_refused(run):
    data_dir, workdir, _ = run
    (workdir / "config.json").unlink()
    for config in (None, run_config(data_dir)):
        with pytest.raises(ValueError, match=r"config.json does not exist"):
            evaluation.evaluate_checkpoint(config, str(workdir))
