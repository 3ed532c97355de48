"""The ``flowforge`` command line (also ``python -m flowforge``).

Commands: ``fit``, ``vi``, ``sample``, ``eval``, ``check``, ``list``, ``experiment``, ``bench``;
``flowforge COMMAND --help`` describes each. Exit codes: 0 success; 2 bad usage or bad input
(one line saying why, no traceback); 1 internal failure (the traceback goes to a log file
whose path is printed); 130 interrupted (after a final checkpoint).
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from pathlib import Path

import typer

from ..errors import ShapeError, SpecError
from . import info, saved, train  # noqa: F401  (each module registers its commands on the app)
from ._app import BadInput, _command, _state, app, log

__all__ = ["BadInput", "app", "main"]

_USER_ERRORS = (SpecError, ShapeError, BadInput)


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..datasets import DataError
    from ..io import ModelFileError
    from ..train import CheckpointError, TargetError

    return (*_USER_ERRORS, DataError, ModelFileError, CheckpointError, TargetError)


def _fail(message: str) -> None:
    typer.echo(f"flowforge: error: {' '.join(message.split())}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; always ends with ``SystemExit`` carrying the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _state.update(log=None, argv=argv, handlers=[])
    command = typer.main.get_command(app)
    code = 0
    try:
        result = command.main(args=argv, prog_name="flowforge", standalone_mode=False)
        code = result if isinstance(result, int) else 0
        if code == 130:  # typer's translation of KeyboardInterrupt; the engines log what they saved
            _fail("interrupted")
    except typer.Exit as e:
        code = e.exit_code
        if code == 130:
            _fail("interrupted")
    except typer.TyperException as e:  # usage errors: unknown options, bad values
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        if message:
            _fail(f"{message} (see flowforge --help)")
        code = getattr(e, "exit_code", 2)
    except (KeyboardInterrupt, typer.Abort) as e:
        reason = e if isinstance(e, KeyboardInterrupt) else e.__cause__
        _fail(f"interrupted: {reason}" if reason is not None and str(reason) else "interrupted")
        code = 130
    except _user_errors() as e:
        _fail(str(e))
        code = 2
    except Exception:
        path = _state["log"] or Path(tempfile.gettempdir()) / f"flowforge-error-{int(time.time())}.log"
        with open(path, "a") as f:
            f.write(f"{_command()}\n{traceback.format_exc()}\n")
        error = sys.exc_info()[1]
        _fail(f"internal failure ({type(error).__name__}: {error}); the traceback is in {path}")
        code = 1
    finally:
        for handler in _state.get("handlers", []):
            log.removeHandler(handler)
            handler.close()
    raise SystemExit(code)
