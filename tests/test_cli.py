"""Every command fails the same way: one ``error: ...`` line, the traceback behind --debug."""

import pathlib
import subprocess
import sys

import pytest

from gcc_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def _fail(exception):
    def work():
        raise exception

    return work


def test_run_turns_an_exception_into_one_line(capsys):
    assert cli.run(_fail(ValueError("config.crop_size must be a multiple of 8"))) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: config.crop_size must be a multiple of 8"
    assert err[1:] == ["(run again with --debug for the traceback)"]


@pytest.mark.parametrize(
    "exception, line",
    [
        (KeyError("image"), "error: KeyError: missing key 'image'"),
        (OSError("image file is truncated"), "error: OSError: image file is truncated"),
        (RuntimeError(), "error: RuntimeError"),
        (FileNotFoundError("no such checkpoint: runs/x"), "error: no such checkpoint: runs/x"),
    ],
)
def test_messages_that_need_their_type_get_it(capsys, exception, line):
    assert cli.run(_fail(exception)) == 1
    assert capsys.readouterr().err.splitlines()[0] == line


def test_debug_lets_the_exception_through():
    with pytest.raises(ValueError, match="bad"):
        cli.run(_fail(ValueError("bad")), debug=True)


def test_status_of_the_work_is_returned():
    assert cli.run(lambda: None) == 0
    assert cli.run(lambda: 3) == 3


def test_train_names_a_mistyped_override_in_one_line():
    result = subprocess.run(
        [sys.executable, "train.py", "--config=configs/synthetic.py:runlocal", "--config.lossname=gl"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: --config.lossname=gl: the config has no field 'lossname'")


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "gcc_jax.evaluate", "--workdir", "{missing}"],
        ["-m", "gcc_jax.predict.nwpu_submission", "--workdir", "{missing}", "--out", "{missing}/out"],
    ],
)
def test_absl_commands_fail_in_one_line(tmp_path, command):
    missing = tmp_path / "no_such_run"
    result = subprocess.run(
        [sys.executable, *(part.format(missing=missing) for part in command)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert str(missing) in line
