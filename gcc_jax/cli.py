"""How every gcc_jax command fails: one line ``error: ...`` on stderr and exit status 1.

The commands (``train.py``, ``gcc_jax.evaluate``, ``gcc_jax.predict``,
``gcc_jax.predict.nwpu_submission``, ``gcc_jax.convert_weights``, ``gcc_jax.data.build``) run
their work through :func:`run`, which turns any exception into that line; ``--debug`` lets the
exception and its traceback through instead. The argparse commands add the flag with
:func:`add_debug_argument`, the absl ones with :func:`define_debug_flag` and parse their flags
with :func:`parse_absl_flags`, which reports a mistyped ``--config.*`` override the same way.

Consoles carry the command's own lines: :func:`quiet_library_logs` turns off the INFO chatter
of the libraries underneath (orbax, absl, XLA, TensorFlow) unless ``--verbosity`` (absl
commands) or ``--debug`` asks for it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

__all__ = [
    "DEBUG_HELP",
    "add_debug_argument",
    "define_debug_flag",
    "error_line",
    "parse_absl_flags",
    "quiet_library_logs",
    "run",
]

DEBUG_HELP = "on an error, show the Python traceback instead of a one-line message"
# Exit status of a failed command (argparse's usage errors keep their own 2).
FAILURE = 1
# Exception types whose message says everything; others are prefixed with their type name.
_SELF_EXPLAINING = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, ImportError)


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """Adds ``--debug`` to an argparse command."""
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)


def define_debug_flag() -> None:
    """Defines the absl flag ``--debug`` (once per process)."""
    from absl import flags

    if "debug" not in flags.FLAGS:
        flags.DEFINE_bool("debug", False, DEBUG_HELP)


def quiet_library_logs(*, verbose: bool = False) -> None:
    """Keeps the libraries' INFO messages off the console, gcc_jax's own on it.

    TensorFlow's and XLA's C++ INFO / WARNING lines (oneDNN notices, start-up messages) go
    through ``TF_CPP_MIN_LOG_LEVEL``, read when they load, so call this before importing
    them; orbax logs each checkpoint operation at INFO through absl. Library warnings and
    errors still show.

    Args:
      verbose: leave every library's logging as it is (``--verbosity`` / ``--debug``).
    """
    if verbose:
        logging.getLogger("gcc_jax").setLevel(logging.INFO)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("gcc_jax").setLevel(logging.INFO)


def error_line(err: BaseException) -> str:
    """The message of ``err`` for a person: its own text, with the type where that helps.

    ``KeyError('x')`` prints as ``'x'`` and an ``OSError`` from a library may not name its
    kind, so such messages get the exception's type in front.
    """
    text = str(err).strip()
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = f"missing key {err.args[0]!r}"
    if not text:
        return type(err).__name__
    if isinstance(err, _SELF_EXPLAINING):
        return text
    return f"{type(err).__name__}: {text}"


def run(work: Callable[[], int | None], *, debug: bool = False) -> int:
    """Runs a command's ``work`` and returns its exit status.

    Args:
      work: the command; returns an exit status or ``None`` (0).
      debug: re-raise exceptions (with their traceback) instead of reporting them.

    Returns:
      ``work``'s status, ``FAILURE`` after printing ``error: ...`` for an exception, or 130
      after an interrupt (Ctrl-C).
    """
    try:
        status = work()
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"error: {error_line(err)}", file=sys.stderr)
        print("(run again with --debug for the traceback)", file=sys.stderr)
        return FAILURE
    return 0 if status is None else int(status)


def _override_error(err: BaseException, argv: Sequence[str]) -> str | None:
    """Names the ``--config.X=...`` argument behind ``err``, if one is to blame."""
    overrides = [arg for arg in argv if arg.startswith("--config.")]
    if not overrides:
        return None
    # ml_collections reports an unknown field as KeyError / AttributeError "'name'".
    match = re.fullmatch(r"""["']*([^"']+)["']*""", str(err.args[0]) if err.args else "")
    name = match.group(1) if match else None
    for arg in overrides:
        path = arg[len("--config."):].split("=", 1)[0]
        if name is not None and name in path.split("."):
            return (
                f"{arg}: the config has no field {name!r} (the config is locked; every field is "
                f"listed with its meaning in configs/default.py)"
            )
    return None


def parse_absl_flags(argv: Sequence[str]) -> list[str]:
    """absl ``flags_parser`` for ``app.run``: bad flags end in one ``error:`` line (exit 2).

    A mistyped ``--config.*`` override otherwise ends a chained traceback with
    ``AttributeError: "'name'"``; here it names the argument and the unknown field.
    """
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except Exception as err:
        if any(arg in ("--debug", "--debug=true", "--debug=True", "--debug=1") for arg in argv):
            raise
        if isinstance(err, flags.Error):
            message = str(err)
        elif isinstance(err, (KeyError, AttributeError)):
            message = _override_error(err, argv) or error_line(err)
        else:
            message = error_line(err)
        print(f"error: {message}", file=sys.stderr)
        print(f"(run {argv[0]} --help for the flags)", file=sys.stderr)
        sys.exit(2)
