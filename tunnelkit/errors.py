"""
Errors a user or a peer can cause, each with a stable code and a sentence.

Every error that reaches a person (a log line, a CLI message, an RPC error
reply, an error page) is a L{TunnelkitError}: a code such as
C{TK_AUTH_FAILED} that scripts and documentation can rely on, and a message
that says what happened and what to do about it.
"""


class TunnelkitError(Exception):
    """
    An error with a stable code and a human sentence.

    @ivar code: a stable identifier, C{TK_} followed by upper-case words.
    @ivar message: one or two sentences saying what went wrong and what to do.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
