"""Errors meant for people, each with the process exit code `gptjax` returns for it.

Exit codes (DESIGN.md): 0 done · 2 usage/config error · 65 bad data/tokenizer ·
70 aborted on non-finite loss · 74 checkpoint I/O failure · 75 preempted · 1 anything else.
"""


class GptjaxError(Exception):
    """Base class: `str(error)` is the one line printed to the user."""

    exit_code = 1


class ConfigError(GptjaxError, ValueError):
    """A bad config value or command-line usage, raised before anything is compiled.

    Also a ValueError, so notebook code that builds a bad ModelConfig sees the usual type.
    """

    exit_code = 2


class DataError(GptjaxError):
    """Missing or corrupt data, tokenizer or vocabulary mismatch."""

    exit_code = 65


class NonFiniteError(GptjaxError):
    """Training aborted after too many consecutive non-finite steps."""

    exit_code = 70


class CheckpointError(GptjaxError):
    """A checkpoint could not be written, read or verified."""

    exit_code = 74


class Preempted(GptjaxError):
    """The run was asked to stop; a checkpoint was committed, restart to resume."""

    exit_code = 75
