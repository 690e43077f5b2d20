"""The one base class of every error pairbert raises for something a user can fix (a file, a field, a
setting). The CLI prints these as one line, without a traceback; anything else is a bug and keeps its
traceback."""


class PairbertError(Exception):
    pass
