"""Kill-and-resume: a run killed with SIGKILL mid-epoch and restarted on its workdir repeats
exactly (same losses) the steps the killed run took after the checkpoint it resumes from, and
continues across the epoch boundary to the end.

The killed run itself is the uninterrupted reference: it trained from step 0 without a break
up to the kill, and its per-step losses are saved before the resumed run rewrites the log.
The killed run reads its data with tf.data, the resumed one with Grain: resuming is exact
whichever input backend feeds the run.
"""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from gcc_jax.runtime import RunCheckpoints
from gcc_jax.training import read_metrics
from tiny_runs import REPO, subprocess_env, tiny_flags

# 32 training images, batch 2: 16 steps per epoch, so the checkpoints (every 5 steps) land
# mid-epoch and the resumed run must skip into its epoch, then cross into the next one.
# (Few epochs: each epoch's tf.data pipeline costs a second or two to build.)
OVERRIDES = {
    "dataset.synthetic.num_train": 32,
    "batch_size": 2,
    "num_train_steps": 24,
    "eval_every_epochs": 100,
    "checkpoint_every_steps": 5,
    "max_checkpoints_to_keep": 2,
}
KILL_AFTER_STEP = 18


def _start(workdir, loader):
    args = [sys.executable, "train.py", f"--workdir={workdir}", *tiny_flags(**OVERRIDES, **{"dataset.loader": loader})]
    env = subprocess_env(compilation_cache=workdir.parent / "jax_cache")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _last_train_step(workdir):
    try:
        return max((r["step"] for r in read_metrics(workdir, "train")), default=0)
    except (FileNotFoundError, ValueError):  # not written yet, or a line being written
        return 0


def _train_losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir, "train")}


def _train_losses_from(path):
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


# Two or three train.py processes (start-up, compilation): 1.5–2 minutes on 2 shared cores;
# in the default suite all the same, as the acceptance test of multi-host / exact resume.
def test_killed_run_resumes_exactly(tmp_path):
    workdir = tmp_path / "run"
    victim = _start(workdir, "tf.data")
    deadline = time.monotonic() + 600
    while _last_train_step(workdir) < KILL_AFTER_STEP:
        if victim.poll() is not None:
            raise AssertionError("the run ended before it could be killed:\n" + victim.communicate()[0][-3000:])
        assert time.monotonic() < deadline, "the run did not reach the kill step in time"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    shutil.copy(workdir / "metrics.jsonl", tmp_path / "before_kill.jsonl")
    checkpoints = RunCheckpoints(workdir)
    restart_step = checkpoints.latest_step()
    checkpoints.close()
    assert restart_step in (5, 10, 15), restart_step  # every one of them mid-epoch

    resumed = _start(workdir, "grain")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-6000:]
    assert f"resuming from the checkpoint at step {restart_step}" in output

    losses = _train_losses(workdir)
    assert sorted(losses) == list(range(1, OVERRIDES["num_train_steps"] + 1))
    reference = _train_losses_from(tmp_path / "before_kill.jsonl")
    repeated = [step for step in sorted(reference) if step > restart_step]
    assert repeated and repeated[-1] >= KILL_AFTER_STEP > 16  # crosses into epoch 1
    # The same compiled step on the same batches from the same state, on the same machine:
    # bitwise equal in practice (JSON round-trips floats exactly); the margin only admits a
    # re-fused program after the restart, whose sums would differ by a few ulps.
    np.testing.assert_allclose([losses[s] for s in repeated], [reference[s] for s in repeated], rtol=1e-6, atol=1e-7)
    # One curve, as if never interrupted: one step-0 evaluation, no duplicated records.
    records = read_metrics(workdir)
    assert len(records) == len({(r["step"], r["split"]) for r in records})
    assert [r["step"] for r in records if r["split"] == "val"] == [0, OVERRIDES["num_train_steps"]]
