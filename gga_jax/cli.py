"""What the command lines (gga_jax.main, gga_jax.experiments) share: errors, flags, Ctrl-C.

--config takes a file or the name of a config shipped in the package (gga_jax.configs,
the repository's configs/): `--config=default:smoke`, `--config=experiments/e5:backbone=text`.
A mistake the user can fix (a config value, a path, a dataset) prints one line
and exits 2; --traceback (or $GGA_JAX_TRACEBACK=1) shows the Python trace.
Ctrl-C prints the command that resumes the run and exits 130.
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib
import shlex
import signal
import sys
from collections.abc import Callable

from absl import app, flags, logging

TRACEBACK_ENV = "GGA_JAX_TRACEBACK"
# Errors a user can fix by changing the command (config values, paths, data, weights): shown
# as one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def guarded(body: Callable[[], None]) -> None:
    """Runs body(); a user error becomes `error: <one line>` and exit status 2."""
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint write at INFO
    try:
        body()
    except USER_ERRORS as e:
        if flags.FLAGS.traceback or os.environ.get(TRACEBACK_ENV, "") in ("1", "true"):
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        print(f"(the traceback: add --traceback or set {TRACEBACK_ENV}=1)", file=sys.stderr)
        sys.exit(2)


def define_traceback_flag() -> None:
    flags.DEFINE_bool(
        "traceback",
        False,
        f"Show the full Python traceback of an error instead of one line "
        f"(also ${TRACEBACK_ENV}=1).",
    )


def stop_on_interrupt(module: str) -> None:
    """Ctrl-C: print the command that resumes the run (python -m module ...), exit 130.

    A KeyboardInterrupt raised inside orbax's or JAX's machinery can be swallowed
    there and training would go on, so the process ends at once instead. What a
    checkpoint write left half done is never the latest step (orbax commits a
    step by renaming it into place) or is set aside on resumption
    (checkpoints.Manager.restore_latest).
    """

    def handler(signum, frame) -> None:
        del signum, frame
        sys.stderr.write(f"\ninterrupted; resume with:\n  {resume_command(module)}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(130)

    signal.signal(signal.SIGINT, handler)


def resume_command(module: str) -> str:
    """The command line of this process, which resumes it from its latest checkpoints."""
    return " ".join(shlex.quote(a) for a in [sys.executable, "-m", module, *sys.argv[1:]])


def packaged_configs() -> dict[str, pathlib.Path]:
    """{name: file} of the configs shipped in gga_jax.configs, e.g. 'experiments/e5'."""
    root = pathlib.Path(str(importlib.resources.files("gga_jax.configs")))
    files = sorted(p for p in root.rglob("*.py") if p.name != "__init__.py")
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in files}


def config_path(value: str) -> str:
    """--config's value with a packaged config's name replaced by its file.

    A file that exists is taken as it is. Otherwise the name may be given as
    'default', 'default.py', 'configs/default.py' or 'experiments.e5', with the
    config's argument after ':'; so the repository's commands work from any
    directory once the package is installed. Raises ValueError naming the
    packaged configs when the value is neither.
    """
    path, sep, arg = value.partition(":")
    if os.path.isfile(path):
        return value
    name = path.removeprefix("./").removeprefix("configs/").removesuffix(".py")
    name = name.replace(".", "/")
    shipped = packaged_configs()
    if name not in shipped:
        raise ValueError(
            f"--config={value}: no file {path!r}, and no packaged config of that name; "
            f"packaged: {', '.join(shipped)}."
        )
    return f"{shipped[name]}{sep}{arg}"


def resolve_config_flag(argv: list[str]) -> list[str]:
    """argv with --config=NAME (or --config NAME) turned into the packaged config's file."""
    out = list(argv)
    for k, a in enumerate(out):
        if a.startswith("--config="):
            out[k] = "--config=" + config_path(a.removeprefix("--config="))
        elif a == "--config" and k + 1 < len(out):
            out[k + 1] = config_path(out[k + 1])
    return out


def flag_parser(hint: str) -> Callable[[list[str]], list[str]]:
    """absl's flag parsing, with a bad flag or config file reported in one line (exit 2)."""

    def parse(argv: list[str]) -> list[str]:
        try:
            argv = resolve_config_flag(argv)
            rest = flags.FLAGS(argv)
            if flags.FLAGS.config is not None:
                getattr(flags.FLAGS.config, "seed", None)  # config_flags loads files lazily
            return rest
        except (flags.Error, OSError, ValueError) as e:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            if len(lines) == 1:  # e.g. "flag --config.train.lr=abc: could not convert ..."
                message = lines[0]
            else:  # a config file that failed to load: its path and the error's last line
                where = next((a for a in argv if a.startswith("--config=")), "--config")
                message = f"{where}: {lines[-1]}"
            print(f"error: {message}", file=sys.stderr)
            print(hint, file=sys.stderr)
            sys.exit(2)

    return parse


def run(main: Callable[[list[str]], None], hint: str) -> None:
    """absl's app.run with one-line flag errors; --help exits 0 as a successful request does."""
    if any(a in ("-h", "--help", "-help", "--helpshort", "-?") for a in sys.argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    app.run(main, flags_parser=flag_parser(hint))
