"""On several hosts, a resumable and a best checkpoint of the same step are written side by
side (orbax names each save's barriers after the step: the two managers must not share them)."""

import socket
import subprocess
import sys

from tiny_runs import REPO, subprocess_env

WORKER = REPO / "tests" / "runtime" / "checkpoint_barrier_worker.py"


def test_a_checkpoint_and_a_best_checkpoint_of_one_step_on_two_hosts(tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    processes = [
        subprocess.Popen([sys.executable, str(WORKER), str(port), str(i), str(tmp_path / "run")], cwd=REPO,
                         env=subprocess_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]  # fmt: skip
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:  # a save waiting at a barrier that never completes
            for other in processes:
                other.kill()
            outputs.append(process.communicate()[0] + "\n(killed after 120 s)")
    for i, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0 and f"process {i}: saved" in output, output[-4000:]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["4"]
    assert sorted(p.name for p in (tmp_path / "run" / "best").iterdir()) == ["4"]
