"""The one error type for a user's mistake in an argument.

Library code raises `InvalidArgumentError(argument, message)` with the name of the Python
argument (``"guidance_scale"``, ``"num_frames"``, ``"model"``); the CLI maps that name to the
flag that set it and prints one clear line, never a stack trace. It is a `ValueError`, so
callers that catch `ValueError` keep working.
"""

from __future__ import annotations


class InvalidArgumentError(ValueError):
    """`argument` is the name of the offending argument; `message` says what is wrong with it."""

    def __init__(self, argument: str, message: str):
        self.argument, self.message = argument, message
        super().__init__(f"{argument}: {message}")
