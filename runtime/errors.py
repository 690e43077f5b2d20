"""The one base class of every error pairbert raises for something a user can fix (a file, a field, a
setting). The CLI prints these as one line, without a traceback, and so does it an OSError the system
raised for a path (too long, no permission): anything else is a bug and keeps its traceback."""


class PairbertError(Exception):
    pass


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries put pages of detail below it), or its type's
    name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def short_path(path: object, limit: int = 120) -> str:
    """A path for a message, its middle elided past `limit` characters (a 5,000-character name is not
    shown whole)."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}…{text[-limit // 2 :]}"


def killed_by(status: int) -> str:
    """How a process that a signal ended ended (`status` is the negative signal number subprocess gives):
    "killed by SIGABRT", or the number when the name is unknown."""
    import signal

    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"
