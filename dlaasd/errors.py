"""What dlaasd refuses or fails with, in words and with an error code (codes.Code).

The API alone turns these into HTTP statuses (api.http_status); the drop folder writes
them to NAME.error.txt. Each names the field or file at fault and says how to fix it."""

from __future__ import annotations

from collections.abc import Sequence

from .codes import Code
from .schema import Problem


class DlaasError(Exception):
    """A request dlaasd will not carry out, or a step of a run that failed."""

    def __init__(self, message: str, code: Code | None = None):
        self.message = message
        self.code = code
        self.problems: list[Problem] = []
        self.warnings: list[str] = []  # what submit would have said had it accepted
        super().__init__(message)


class Invalid(DlaasError):
    """The request itself is wrong: each problem names its field (or line)."""

    def __init__(self, message: str, code: Code | None = None, problems: Sequence[Problem] = ()):
        super().__init__(message, code)
        self.problems = list(problems)


class TooLarge(Invalid):
    """More bytes than dlaasd takes in one request."""


class Ambiguous(Invalid):
    """An id prefix that names several runs or experiments."""

    def __init__(self, message: str, matches: Sequence[str]):
        super().__init__(message)
        self.matches = list(matches)


class NotFound(DlaasError):
    """No run, experiment, file, bucket or object of that name."""


class Forbidden(DlaasError):
    """It is another user's."""


class Conflict(DlaasError):
    """Not now: the run's status does not allow it."""


class Unavailable(DlaasError):
    """Something dlaasd needs (the object store, Docker) did not answer: retry later."""


class Internal(DlaasError):
    """dlaasd's own fault (a bug): the request may be fine."""

    def __init__(self, message: str):
        super().__init__(message, Code.INTERNAL)


class RunError(DlaasError):
    """A step of a run that failed, with the code the run fails with and a sentence that
    says what to do."""

    code: Code

    def __init__(self, code: Code, message: str):
        super().__init__(message, code)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
