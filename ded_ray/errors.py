"""Errors caused by what the user gave (a config, a path, a model name): the CLI prints the message, no traceback."""


class UserError(Exception):
    """Bad input from the user; the message names the input and the fix."""
