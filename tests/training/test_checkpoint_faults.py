"""Faults of checkpoint storage: a damaged newest checkpoint is skipped with one warning and the
newest intact one used; with none intact one error says what to delete; a save that cannot be
written raises an error naming the directory and leaves the earlier checkpoints intact; a
process killed (SIGKILL) in the middle of a save leaves the earlier checkpoint as the newest."""

import logging
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gcc_jax.runtime import CheckpointError, RunCheckpoints, restore_params
from gcc_jax.runtime.checkpoints import DAMAGED_DIR, latest_param_shapes
from tiny_runs import REPO, subprocess_env

KILL_WORKER = pathlib.Path(__file__).with_name("checkpoint_kill_worker.py")


def _state(value: float) -> dict:
    """A train-state-like tree whose every parameter is ``value``."""
    return {
        "step": jnp.asarray(int(value), jnp.int32),
        "params": {"w": jnp.full((16, 8), value, jnp.float32), "b": jnp.full((8,), value, jnp.float32)},
    }


def _save(workdir, steps, *, best_at=None):
    checkpoints = RunCheckpoints(workdir, max_to_keep=5)
    for step in steps:
        checkpoints.save(_state(step), {"step": step, "epoch": 0, "batch": step})
        if step == best_at:
            checkpoints.save_best_if_better(step, _state(step)["params"], {"mae": 1.0})
    checkpoints.close()


def _truncate_arrays(step_dir: pathlib.Path) -> None:
    """Cuts every array data file of a checkpoint to a few bytes, as a full disk or an
    interrupted copy leaves them."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for path in files:
        with path.open("r+b") as f:
            f.truncate(10)


def _delete_arrays(step_dir: pathlib.Path) -> None:
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for path in files:
        path.unlink()


def _warnings(caplog) -> list[str]:
    # Our own lines only: when several arrays of a checkpoint fail to read, asyncio may log the
    # failures orbax's first error left unretrieved ("Task exception was never retrieved"), or not,
    # depending on which read finishes first.
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("gcc_jax")]


@pytest.mark.parametrize("damage", [_truncate_arrays, _delete_arrays], ids=["truncated", "deleted"])
def test_resuming_skips_a_damaged_newest_checkpoint(tmp_path, caplog, damage):
    _save(tmp_path, [2, 4])
    damage(tmp_path / "checkpoints" / "4" / "state")
    checkpoints = RunCheckpoints(tmp_path)
    with caplog.at_level(logging.WARNING):
        state, position = checkpoints.restore(_state(0))
    assert position["step"] == 2
    np.testing.assert_array_equal(state["params"]["w"], np.full((16, 8), 2.0))
    (line,) = _warnings(caplog)
    assert f"checkpoint {tmp_path / 'checkpoints' / '4'} cannot be read" in line
    assert "trying the one at step 2" in line and "\n" not in line
    # Set aside, so the resumed run can write step 4 again; nothing deleted.
    assert (tmp_path / DAMAGED_DIR / "4" / "state").is_dir()
    assert checkpoints.latest_step() == 2
    checkpoints.save(_state(4), {"step": 4, "epoch": 0, "batch": 4})
    checkpoints.close()
    assert RunCheckpoints(tmp_path).restore(_state(0))[1]["step"] == 4


@pytest.mark.parametrize("damage", ["{truncated", '{"loss": 1.0}'], ids=["truncated", "no_mae"])
def test_a_best_checkpoint_with_damaged_metrics_is_set_aside_and_replaced(tmp_path, caplog, damage):
    _save(tmp_path, [2, 4], best_at=2)
    metrics_dir = tmp_path / "best" / "2" / "metrics"
    files = [p for p in metrics_dir.rglob("*") if p.is_file() and p.name != "commit_success.txt"]
    assert files
    for path in files:
        path.write_text(damage)
    with caplog.at_level(logging.WARNING):
        checkpoints = RunCheckpoints(tmp_path)
    (line,) = _warnings(caplog)
    assert f"best checkpoint {tmp_path / 'best' / '2'} cannot be read" in line and "\n" not in line
    assert (tmp_path / DAMAGED_DIR / "best" / "2" / "params").is_dir()  # set aside, not deleted
    assert checkpoints.best() is None
    assert checkpoints.save_best_if_better(4, _state(4)["params"], {"mae": 3.0})
    checkpoints.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        reopened = RunCheckpoints(tmp_path)
    assert reopened.best() == (4, {"mae": 3.0}) and not _warnings(caplog)  # a sound best stays
    reopened.close()


def test_with_no_intact_checkpoint_one_error_says_what_to_delete(tmp_path):
    _save(tmp_path, [2, 4])
    for step in (2, 4):
        _truncate_arrays(tmp_path / "checkpoints" / str(step) / "state")
    checkpoints = RunCheckpoints(tmp_path)
    with pytest.raises(CheckpointError) as error:
        checkpoints.restore(_state(0))
    checkpoints.close()
    message = str(error.value)
    assert f"delete {tmp_path / 'checkpoints'}" in message and "--workdir" in message
    assert "steps 4 (" in message and "2 (" in message and "\n" not in message


def test_evaluation_falls_back_from_a_damaged_checkpoint_and_changes_nothing(tmp_path, caplog):
    _save(tmp_path, [2, 4, 6], best_at=6)
    _truncate_arrays(tmp_path / "checkpoints" / "6" / "state")
    _truncate_arrays(tmp_path / "best" / "6" / "params")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state(0)["params"])
    with caplog.at_level(logging.WARNING):
        params, step = restore_params(tmp_path, abstract, which="latest")
    assert step == 4 and float(params["w"][0, 0]) == 4.0
    assert len(_warnings(caplog)) == 1 and "checkpoints/6 cannot be read" in _warnings(caplog)[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        params, step = restore_params(tmp_path, abstract, which="best")
    assert step == 4 and float(params["b"][0]) == 4.0
    assert "best/6 cannot be read" in _warnings(caplog)[0]
    with pytest.raises(CheckpointError, match="checkpoints/6 cannot be read"):
        restore_params(tmp_path, abstract, which="6")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_shape_check_reads_the_newest_checkpoint_whose_metadata_is_intact(tmp_path):
    _save(tmp_path, [2, 4])
    (tmp_path / "checkpoints" / "4" / "state" / "_METADATA").unlink()
    step, shapes = latest_param_shapes(tmp_path)
    assert step == 2 and shapes == {"b": (8,), "w": (16, 8)}


def test_a_failed_save_names_the_directory_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _save(tmp_path, [2])
    checkpoints = RunCheckpoints(tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # The array writes of every save go through the handler's async save.
    monkeypatch.setattr(ocp.PyTreeCheckpointHandler, "async_save", disk_full)
    with pytest.raises(CheckpointError) as error:
        checkpoints.save(_state(4), {"step": 4, "epoch": 0, "batch": 4})
        checkpoints.wait_until_finished()
    message = str(error.value)
    assert f"cannot write the checkpoint of step 4 to {tmp_path / 'checkpoints'}" in message
    assert "No space left on device" in message and "the checkpoint of step 2 is intact" in message
    monkeypatch.undo()
    checkpoints.close()
    state, position = RunCheckpoints(tmp_path).restore(_state(0))
    assert position["step"] == 2 and float(state["params"]["w"][0, 0]) == 2.0


def test_a_save_killed_midway_leaves_the_previous_checkpoint_newest(tmp_path, caplog):
    worker = subprocess.Popen(
        [sys.executable, str(KILL_WORKER), str(tmp_path)],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    # The worker prints "saving" once step 2 is on disk and the write of step 4 has begun.
    while not (tmp_path / "started").exists():
        assert worker.poll() is None, worker.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the worker did not start its second save"
        time.sleep(0.05)
    assert any(".orbax-checkpoint-tmp" in p.name for p in (tmp_path / "checkpoints").iterdir())
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    checkpoints = RunCheckpoints(tmp_path)
    with caplog.at_level(logging.WARNING):
        state, position = checkpoints.restore(_state(0))
    checkpoints.close()
    assert position["step"] == 2 and float(state["params"]["w"][0, 0]) == 2.0
    assert not _warnings(caplog)  # the partial save is orbax's temporary folder: not a damaged checkpoint


def test_a_run_whose_save_fails_ends_in_one_error_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    from gcc_jax import cli
    from gcc_jax.training import train_and_evaluate
    from tiny_runs import tiny_config

    config = tiny_config(num_train_steps=4, checkpoint_every_steps=2)
    start_writing = ocp.PyTreeCheckpointHandler.async_save

    async def fail_at_step_4(self, directory, *args, **kwargs):
        if f"{tmp_path / 'checkpoints' / '4'}" in str(directory):
            raise PermissionError(13, "Permission denied", str(directory))
        return await start_writing(self, directory, *args, **kwargs)

    monkeypatch.setattr(ocp.PyTreeCheckpointHandler, "async_save", fail_at_step_4)
    status = cli.run(lambda: train_and_evaluate(config, tmp_path))
    assert status == cli.FAILURE
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert f"cannot write the checkpoint of step 4 to {tmp_path / 'checkpoints'}" in errors[0]
    assert "Permission denied" in errors[0] and "the checkpoint of step 2 is intact" in errors[0]
    monkeypatch.undo()
    assert RunCheckpoints(tmp_path).latest_step() == 2
