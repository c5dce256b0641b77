"""Typed records that travel between the database and the rest of dlaasd.

A row keeps them as JSON (the `outcome` and `staging` columns); these classes are what
the code reads and writes, so a misspelt key is an error where it is made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """How a run ends: decided when its training ends, kept through STORING (so a restart
    there still ends with the right status), then made its final status."""

    status: str  # COMPLETED, FAILED or HALTED
    message: str  # the sentence users read: what happened, and what to do about it
    error_code: str | None = None  # a codes.Code's value when FAILED
    exit_code: int | None = None  # the training command's, when it ran

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(data["status"], data["message"], data.get("error_code"), data.get("exit_code"))


@dataclass(frozen=True)
class StagingFigures:
    """What a run's staging moved: in before the training, out after it."""

    bytes_downloaded: int = 0
    files_downloaded: int = 0
    cache_hits: int = 0  # files linked from the data cache instead of downloaded
    download_seconds: float = 0.0
    bytes_uploaded: int = 0
    files_uploaded: int = 0
    upload_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> StagingFigures:
        """A row's figures; keys this version does not know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})
