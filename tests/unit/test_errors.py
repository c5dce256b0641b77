"""Domain errors carry no HTTP status; api.http_status is the one place that gives them
one, and the drop folder writes the same errors to NAME.error.txt."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlaasd import diskspace
from dlaasd.api import error_body, http_status
from dlaasd.codes import Code, meaning
from dlaasd.errors import (
    Ambiguous,
    Conflict,
    DlaasError,
    Forbidden,
    Internal,
    Invalid,
    NotFound,
    RunError,
    TooLarge,
    Unavailable,
)
from dlaasd.schema import Problem


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Invalid("bad"), 400),
        (Ambiguous("'a' names several", ["training-a1", "training-a2"]), 400),
        (TooLarge("too big"), 413),
        (Forbidden("alice's"), 403),
        (NotFound("no run 'x'"), 404),
        (Conflict("already ended"), 409),
        (Unavailable("the store did not answer"), 503),
        (Internal("a bug"), 500),
        (RunError(Code.BAD_CREDENTIALS, "refused"), 400),
        (RunError(Code.UPLOAD_FAILED, "the store is full"), 507),
        (RunError(Code.DISK_FULL, "no room"), 507),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, DlaasError) else str(v),
)
def test_each_error_has_its_status(error: DlaasError, status: int):
    assert http_status(error) == status


def test_the_body_carries_code_problems_and_warnings():
    error = Invalid("the manifest has problems", Code.BAD_MANIFEST, [Problem("gpus", "a number")])
    error.warnings = ["a note"]
    body = error_body(error)["error"]
    assert body["code"] == "C101" and body["warnings"] == ["a note"]
    assert body["problems"] == [{"field": "gpus", "line": None, "message": "a number"}]
    assert error_body(NotFound("no run 'x'")) == {"error": {"message": "no run 'x'"}}


def test_an_internal_error_and_a_full_disk_carry_their_codes():
    assert error_body(Internal("internal error: boom"))["error"]["code"] == "S100"
    full = diskspace.error(Path("/"), "testing")
    assert full.code == Code.DISK_FULL and http_status(full) == 507


def test_codes_are_their_values_on_the_wire():
    assert str(Code.INTERNAL) == "S100" and f"{Code.PLACE_LOST}" == "S102"
    assert meaning("S102") == Code.PLACE_LOST.meaning
    assert meaning("X999") == "X999"  # a code an older dlaasd stored
    assert str(RunError(Code.TIMED_OUT, "after 1h")) == "C203: after 1h"
