"""A run's workdir: what counts as a started run, and what a run that fails leaves behind."""
import os

import pytest

from stn.experiments import workdir as workdir_lib


@pytest.mark.parametrize("name", workdir_lib.RUN_FILES)
def test_any_one_of_a_runs_files_makes_a_started_run(tmp_path, name):
    """config.json alone (written once every check passed) counts, as does each other file."""
    (tmp_path / name).write_text("{}")
    assert workdir_lib.holds_a_run(str(tmp_path))


def test_a_folder_with_only_a_log_holds_no_run(tmp_path):
    (tmp_path / "log.txt").write_text("# the command\n")
    assert not workdir_lib.holds_a_run(str(tmp_path))


def test_a_run_that_raises_after_writing_config_json_keeps_it_and_its_lock(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="failed after the start"):
        with workdir_lib.workdir_lock(str(workdir)):
            (workdir / workdir_lib.CONFIG_FILE).write_text("{}")
            raise RuntimeError("failed after the start")
    assert sorted(os.listdir(workdir)) == [workdir_lib.LOCK_FILE, workdir_lib.CONFIG_FILE]


def test_a_run_refused_before_writing_anything_leaves_no_folder(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match="refused"):
        with workdir_lib.workdir_lock(str(workdir)):
            raise ValueError("refused")
    assert not workdir.exists()
