"""The command line speaks its own flags: messages and warnings raised by the library name
Python arguments (``drop_nonfinite=True``, ``fix={'L_inf': ...}``); under ``lossrate`` they are
shown with the flags that do the same (``--drop-nonfinite``, ``--fix L_inf=VALUE``). An error
that carries its own CLI wording (``LossrateError.cli``) is shown with that; every other
message goes through :data:`_PHRASES`. References to documents a user does not have
("theory §4.5") are dropped."""

from __future__ import annotations

import re

__all__ = ["cli_text", "error_text"]

#: (pattern, replacement) applied in order; patterns are regular expressions
_PHRASES: tuple[tuple[str, str], ...] = (
    (r"\bfix=\{\{?['\"]?(\w+)['\"]?: *(?:\.\.\.|[^}]*)\}\}?", r"--fix \1=VALUE"),
    (r"\bfix=\{\.\.\.\}", "--fix NAME=VALUE"),
    (r"\bthrough fix=\.\.\.", "with --fix NAME=VALUE"),
    (r"\(Trajectory\.read\(\.\.\., drop_nonfinite=True\)\)", "(--drop-nonfinite)"),
    (r"\bdrop_nonfinite=True", "--drop-nonfinite"),
    (r"\binterpolate_lr=True", "--interpolate-lr"),
    (r"\ballow_truncated=True", "--allow-truncated"),
    (
        r"a larger max_bytes \(or max_bytes=None\)",
        "a larger --max-bytes (e.g. --max-bytes 2G, or 0 for no limit)",
    ),
    (r"\bmax_bytes=None\b", "--max-bytes 0"),
    (r"\bmax_bytes\b", "--max-bytes"),
    (r"\bformat='(\w+)'", r"--format \1"),
    (r"\bformat= one of", "--format, one of"),
    (r"\bpass format=", "pass --format"),
    (r"\bcolumns=\{\{?'loss': [^}]*\}\}?(?: \(read_log: loss_tag='<tag>'\))?", "--loss-key NAME"),
    (r"\bcolumns=\{\{?'lr': None\}\}?", "no --lr-key (and --lr LR)"),
    (r"\bcolumns=\{\{?'lr': [^}]*\}\}?", "--lr-key NAME"),
    (r"\(columns=\{\.\.\.\}\)", "(--loss-key NAME, --lr-key NAME)"),
    (r"\bcolumns=\{\.\.\.\}", "--loss-key NAME or --lr-key NAME"),
    (r"\bloss_tag='<tag>'", "--loss-key NAME"),
    (
        r"\bdecay_start is required for shape='wsd', e\.g\. decay_start=int\(0\.8 \* n_steps\)",
        "--schedule wsd needs --decay-start STEP, e.g. 80 % of --steps",
    ),
    (r"\bdecay_start=int\(0\.8 \* n_steps\)", "--decay-start STEP (e.g. 80 % of --steps)"),
    (r"\bdecay_start is required for shape='wsd'", "--schedule wsd needs --decay-start STEP"),
    (r"\bdecay_start\b", "--decay-start"),
    (r"\bshape=('\w+')", r"--schedule \1"),
    (r"\bn_steps=(\d+)", r"--steps \1"),
    (r"\bwarmup=(\d+)", r"--warmup \1"),
    (r"\bor pass a CurveModel instance", "(--model)"),
    (r"\bpass a CurveModel instance", "choose one of the --model names"),
    (r"\bmodel='(\w+)'", r"--model \1"),
    (r"\bprior=", "--prior "),
    (r"\bbootstrap=(\d+)", r"--bootstrap \1"),
    (r"\buntil=", "--until "),
    (r"\bmeta\.loss\b", "--loss"),
    (r"\bmeta\.classes\b", "--classes"),
    (r"\bRunMeta\.loss\b", "--loss"),
    (r"\bRunMeta\.classes\b", "--classes"),
    (r"\s*\(theory §[\d.,§ \-–]+(?:;\s*)?([^)]*)\)", r" (\1)"),
    (r"\s*\(\)", ""),
    (r",?\s*theory §[\d.]+(?:[-–,]\s*§?[\d.]+)*", ""),
)
_COMPILED = tuple((re.compile(p), r) for p, r in _PHRASES)


def cli_text(text: str) -> str:
    """``text`` with Python argument names replaced by the flags of ``lossrate``."""
    for pattern, repl in _COMPILED:
        text = pattern.sub(repl, text)
    # file names that are not UTF-8 carry lone surrogates: show their bytes as U+FFFD
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def error_text(exc: BaseException) -> str:
    """The message of ``exc`` as the command line shows it."""
    own = getattr(exc, "cli", None)
    return cli_text(own if isinstance(own, str) and own else str(exc))
