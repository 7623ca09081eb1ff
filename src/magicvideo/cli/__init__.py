"""The `magicvideo` command line.

Each module in this package adds one command (or a group of commands) through a
`register(subparsers)` function; `main` collects them all, so a command lives next to
nothing but its own code.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import pkgutil
import sys
from contextlib import contextmanager

from ..errors import InvalidArgumentError
from ..limits import AREA_FACTOR

ALLOW_LARGE_HELP = (f"run sizes beyond the stated limit, which refuses frames of more than {AREA_FACTOR}x the area the "
                    f"model was trained at ({AREA_FACTOR**0.5:.0f}x each side: 256x256 for the bundled 64x64 models) "
                    "before any work starts, as memory and time grow with the area")


class UserError(Exception):
    """A mistake in the user's input: printed as one clear line, never as a stack trace."""


def refuse_unused(args: argparse.Namespace, reason: str, *names: str) -> None:
    """UserError naming the first of the options `names` (argparse destinations) that was given (is
    neither None nor False) although it would not be used, as `reason` says: a value given is never
    silently dropped."""
    for name in names:
        if getattr(args, name) not in (None, False):
            raise UserError(f"--{name.replace('_', '-')}: {reason}")


@contextmanager
def loading_without_gc():
    """Run a command's imports and model loading with the garbage collector paused, then move
    everything they made to the permanent generation (`gc.freeze`) and resume it. Importing torch,
    diffusers and transformers creates hundreds of thousands of long-lived objects: the collections
    they trigger find nothing to free and took about 15% of `magicvideo generate`'s import time
    (docs/efficiency.md). Later collections then skip those objects too."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def flag_for(args: argparse.Namespace, argument: str) -> str:
    """The command-line name of a library argument: a command's own `argument_flags` table (e.g.
    num_inference_steps -> --steps), else the option whose destination has that name."""
    flags = getattr(args, "argument_flags", None) or {}
    if argument in flags:
        return flags[argument]
    if argument in vars(args):
        return "--" + argument.replace("_", "-")
    return argument


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magicvideo",
        description="MagicVideo: efficient text-to-video generation with latent diffusion.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as err:
        print(f"magicvideo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except InvalidArgumentError as err:
        print(f"magicvideo {args.command}: error: {flag_for(args, err.argument)}: {err.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"magicvideo {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The `magicvideo` executable: `main`, then exit with its code."""
    code = main()
    # The work is done: spare the interpreter's shutdown a garbage collection of everything torch,
    # diffusers and transformers created (0.7 s of a 7 s `magicvideo generate`).
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
