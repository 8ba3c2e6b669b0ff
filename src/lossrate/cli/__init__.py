"""The ``lossrate`` command: demo, train, fit, predict, evaluate, floor, report.

Exit codes: 0 ok; 2 usage error or invalid argument; 3 bad data (a missing, empty or
malformed file); 4 internal failure (one line on stderr, rerun with ``--debug`` for the
traceback); 130 interrupted (Ctrl-C). With ``--json`` the result (or the error) is one
JSON object on stdout; progress and messages go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._errors import DataError, InvalidArgumentError, LossrateError
from ._commands import Outcome
from ._parser import build_parser
from ._speak import cli_text, error_text

__all__ = [
    "EXIT_DATA",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Outcome",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version exit 0, usage errors exit 2
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    want_json = bool(getattr(args, "json", False))
    try:
        with _warnings_in_cli_words():
            outcome = args.func(args)
    except KeyboardInterrupt:
        hint = " Continue the run with --resume." if args.command == "train" else ""
        return _fail(
            want_json,
            EXIT_INTERRUPTED,
            "interrupted",
            f"interrupted (Ctrl-C); outputs already written are kept.{hint}",
        )
    except InvalidArgumentError as exc:
        return _fail(want_json, EXIT_USAGE, "invalid-argument", error_text(exc))
    except DataError as exc:
        return _fail(want_json, EXIT_DATA, "bad-data", error_text(exc))
    except LossrateError as exc:
        return _fail(want_json, EXIT_USAGE, "error", error_text(exc))
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (rerun with --debug for the traceback)"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _fail(
            want_json,
            EXIT_INTERNAL,
            "internal",
            f"internal error: {type(exc).__name__}: {first}{hint}",
        )
    if want_json:
        print(json.dumps(_jsonable(outcome.data), indent=2, sort_keys=True, allow_nan=False))
    else:
        print(cli_text(outcome.text))
    return EXIT_OK


@contextlib.contextmanager
def _warnings_in_cli_words() -> Iterator[None]:
    """Python warnings raised by a command, shown once each in the command's words on stderr;
    numpy's and scipy's floating-point warnings (overflow, invalid value) summed in one line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            _show_warnings(caught)


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    numeric = [w for w in caught if issubclass(w.category, RuntimeWarning) and _numeric(w)]
    shown: set[str] = set()
    for w in caught:
        if w in numeric:
            continue
        text = cli_text(str(w.message))
        if text not in shown:
            shown.add(text)
            print(f"lossrate: warning: {text}", file=sys.stderr)
    if numeric:
        kinds = sorted({str(w.message).split(" encountered")[0] for w in numeric})
        print(
            f"lossrate: warning: {len(numeric)} floating-point warning(s) in the fit "
            f"({'; '.join(kinds)[:200]}): the log's values are near the limits of float "
            "arithmetic or the fit strayed there; check the result (and the loss column).",
            file=sys.stderr,
        )


def _numeric(w: warnings.WarningMessage) -> bool:
    text = str(w.message)
    return "encountered" in text or "overflow" in text


def _fail(want_json: bool, code: int, kind: str, message: str) -> int:
    print(f"lossrate: error: {message}", file=sys.stderr)
    if want_json:
        print(json.dumps({"error": {"kind": kind, "message": message, "exit_code": code}}))
    return code


def _jsonable(obj: Any) -> Any:
    """JSON-safe copy: NaN -> null, +-inf -> "inf"/"-inf", numpy scalars and paths to plain values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return _jsonable(obj.tolist())
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
