"""S3 bucket names: which the store accepts, and the one fixed rule that maps any other
name to one it does (FfDL's examples name buckets `tf_training_data`, which S3 and MinIO
refuse). Pure functions; every place a bucket name comes in uses `store_name`.

The rule, for a name the store refuses (a valid name is kept as it is):
  1. lowercase it;
  2. every run of characters other than a-z, 0-9, '.' and '-' becomes one '-';
  3. every run of '.' and '-' that holds a '.' becomes one '.';
  4. trim '-' and '.' from both ends; a name shaped like an IP address gets '-' for '.';
  5. if the result is shorter than 3 or longer than 63 characters: cut it to 54, trim
     again, and append '-' and the first 8 hex digits of the SHA-256 of the name as
     written, so that two long names that differ only at the end stay apart.
"""

from __future__ import annotations

import hashlib
import re

_VALID = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
ALLOWED = (
    "3 to 63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
)


def problem(name: str) -> str | None:
    """Why S3 and MinIO refuse `name`, or None if they accept it."""
    if not 3 <= len(name) <= 63:
        return f"has {len(name)} characters; S3 allows 3 to 63"
    if not _VALID.match(name):
        return f"S3 allows only {ALLOWED}"
    if ".." in name or ".-" in name or "-." in name:
        return "S3 does not allow '..', '.-' or '-.' in a bucket name"
    if _IP.match(name):
        return "S3 does not allow a bucket name shaped like an IP address"
    return None


def store_name(name: str) -> str:
    """The bucket `name` means in the store: itself when valid, else the rule's result."""
    if problem(name) is None:
        return name
    out = re.sub(r"[^a-z0-9.-]+", "-", name.lower())
    out = re.sub(r"[.-]*\.[.-]*", ".", out).strip("-.")
    if _IP.match(out):
        out = out.replace(".", "-")
    if not 3 <= len(out) <= 63:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        out = f"{out[:54].strip('-.')}-{digest}".lstrip("-")
    return out


def mapped(name: str) -> str | None:
    """A one-line note when `name` is not the bucket used, else None."""
    used = store_name(name)
    if used == name:
        return None
    return f"bucket {name!r} is stored as {used!r}: S3 does not allow {name!r} (README: buckets)"
