"""Stopping on SIGTERM / SIGINT: the run finishes its step, saves it, says so on one line and
exits with status 75; run again, it writes exactly the metrics of a run never stopped."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from gcc_jax.runtime import RunCheckpoints
from gcc_jax.training import STOPPED_STATUS, read_metrics
from gcc_jax.training import preemption
from tiny_runs import REPO, subprocess_env, tiny_flags

# 16 training images, batch 4: 4 steps per epoch, 12 steps. Metrics averaged over 3 steps, so
# a stop between two rows leaves a partial interval that the resumed run must complete; a
# checkpoint every 10 steps, so the stop's checkpoint is not one of the regular ones.
OVERRIDES = {
    "dataset.synthetic.num_train": 16,
    "num_train_steps": 12,
    "log_every_steps": 3,
    "checkpoint_every_steps": 10,
    "eval_every_epochs": 2,
}


def _start(workdir):
    args = [sys.executable, "train.py", f"--workdir={workdir}", *tiny_flags(**OVERRIDES)]
    env = subprocess_env(compilation_cache=workdir.parent / "jax_cache")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _train_rows(workdir):
    try:
        return len(read_metrics(workdir, "train"))
    except (FileNotFoundError, ValueError):  # not written yet, or a line being written
        return 0


def _without_timing(records):
    return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in records]


# Three train.py processes, two of them at once: about a minute on 2 idle cores.
def test_sigterm_saves_the_step_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path):
    reference = _start(tmp_path / "uninterrupted")
    stopped = _start(tmp_path / "stopped")
    rows_before_signal = random.choice([1, 2])  # after step 3 or 6
    deadline = time.monotonic() + 400
    while _train_rows(tmp_path / "stopped") < rows_before_signal:
        assert stopped.poll() is None, "the run ended before the signal:\n" + stopped.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run did not reach the signal step in time"
        time.sleep(0.01)
    signalled_after = max(r["step"] for r in read_metrics(tmp_path / "stopped", "train"))
    stopped.send_signal(signal.SIGTERM)
    out, err = stopped.communicate(timeout=300)
    assert stopped.returncode == STOPPED_STATUS, err[-3000:]
    (line,) = [line for line in out.splitlines() if line.startswith("stopped at step")]
    step = int(line.split()[3].rstrip(";"))
    assert line == f"stopped at step {step}; checkpoint saved; run the same command to resume"
    assert signalled_after <= step < OVERRIDES["num_train_steps"]  # no finished step lost
    assert "error:" not in err and "Traceback" not in err
    checkpoints = RunCheckpoints(tmp_path / "stopped")
    assert checkpoints.latest_step() == step
    checkpoints.close()
    assert max(r["step"] for r in read_metrics(tmp_path / "stopped", "train")) == step  # the metrics up to it

    resumed = _start(tmp_path / "stopped")
    out, err = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, err[-3000:]
    assert f"resuming from the checkpoint at step {step}" in out
    out, err = reference.communicate(timeout=400)
    assert reference.returncode == 0, err[-3000:]

    # The same compiled steps on the same batches from the same state on one machine: the rows
    # are equal (JSON round-trips floats exactly); only the measured speed differs.
    assert _without_timing(read_metrics(tmp_path / "stopped")) == _without_timing(read_metrics(tmp_path / "uninterrupted"))
    # TensorBoard holds the same: each (tag, step) once, the partial interval's entries gone.
    from tensorboardX.proto.event_pb2 import Event

    from gcc_jax.training.writers import _read_records

    def scalars(workdir):
        found = []
        for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
            for record in _read_records(path):
                event = Event.FromString(record)
                found += [(v.tag, event.step) for v in event.summary.value if v.HasField("simple_value")]
        return found

    stopped_scalars = scalars(tmp_path / "stopped")
    assert len(stopped_scalars) == len(set(stopped_scalars))
    assert sorted(stopped_scalars) == sorted(scalars(tmp_path / "uninterrupted"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_asks_to_stop_and_the_second_stops_at_once(monkeypatch, signum):
    exits = []
    monkeypatch.setattr(preemption.os, "_exit", lambda status: exits.append(status))
    previous = signal.getsignal(signum)
    with preemption.StopRequests() as requests:
        requests.start(0)
        assert not requests.reached(1)
        os.kill(os.getpid(), signum)
        assert requests.reached(2) and not exits
        os.kill(os.getpid(), signum)
        assert exits == [128 + signum]
    assert signal.getsignal(signum) is previous

