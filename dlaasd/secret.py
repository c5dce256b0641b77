"""Secrets in a manifest, kept apart from everything else about a run.

A manifest's secrets are its object store passwords (`data_stores[].connection.password`)
and the `env` values whose names match the config's `secret_env` patterns. What is kept
for reading (the database, the run's folder, the definitions bucket) and everything shown
has the placeholder in their place, the rest of the text as it was written; the values
themselves go to a file only dlaasd reads (0600 in a 0700 folder), read back when a run
needs them: to stage its data, to start its containers.

Pure except for `Vault`, which owns that folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import yaml

from .manifest import Manifest, placeholder

PLACEHOLDER = "********"
_QUOTED = f'"{PLACEHOLDER}"'
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _kept(value: object) -> bool:
    """A value worth keeping apart: not empty, not an example's `<S3 secret>`, not ours."""
    return value is not None and not placeholder(str(value)) and str(value) != PLACEHOLDER


def is_secret_name(name: str, patterns: list[str]) -> bool:
    """Whether an env variable's name marks its value secret (patterns match any case)."""
    return any(fnmatchcase(name.upper(), p.upper()) for p in patterns)


@dataclass
class Secrets:
    """The secret values of one run's manifest."""

    passwords: dict[int, str] = field(default_factory=dict)  # data_stores index -> password
    env: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.passwords or self.env)

    def values(self) -> set[str]:
        return {v for v in (*self.passwords.values(), *self.env.values()) if v}

    def apply(self, m: Manifest) -> Manifest:
        """Put the values back into a manifest parsed from the redacted text."""
        for i, password in self.passwords.items():
            connection = m.data_stores[i].connection if i < len(m.data_stores) else None
            if connection:
                connection.password = password
        m.env.update({k: v for k, v in self.env.items() if k in m.env})
        return m

    def to_json(self) -> dict:
        return {"passwords": {str(i): p for i, p in self.passwords.items()}, "env": self.env}

    @classmethod
    def from_json(cls, data: dict) -> Secrets:
        passwords = {int(i): str(p) for i, p in (data.get("passwords") or {}).items()}
        return cls(passwords, {str(k): str(v) for k, v in (data.get("env") or {}).items()})


def secrets_of(m: Manifest, patterns: list[str]) -> Secrets:
    """The secret values of a parsed manifest (as the run will use them)."""
    passwords = {
        i: s.connection.password
        for i, s in enumerate(m.data_stores)
        if s.connection and _kept(s.connection.password)
    }
    env = {k: v for k, v in m.env.items() if is_secret_name(k, patterns) and _kept(v)}
    return Secrets(passwords, env)


def redact(text: str | bytes, patterns: list[str], at: tuple[str, ...] = ()) -> str:
    """The manifest text with every secret value replaced by the placeholder, everything
    else as written (comments, order, quoting). `at`: the keys leading to the manifest
    inside a larger document (an experiment file's `manifest:`). Text that is not YAML
    comes back unchanged: such a manifest is refused anyway."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError:
        return text
    for key in at:
        root = _get(root, key)
    nodes = _secret_nodes(root, patterns)
    if not nodes:
        return text
    values = {n.value for n in nodes if isinstance(n, yaml.ScalarNode) and n.value}
    expected = yaml.load(text, Loader=_LOADER)
    _redact_data(_inner(expected, at), patterns)
    edited = text
    for start, end in sorted({(n.start_mark.index, n.end_mark.index) for n in nodes}, reverse=True):
        edited = edited[:start] + _replacement(edited[start:end]) + edited[end:]
    scrubbed = edited  # a value written elsewhere too (a comment) goes as well
    for value in sorted(values - {PLACEHOLDER}, key=len, reverse=True):
        if len(value) >= 4:
            scrubbed = scrubbed.replace(value, PLACEHOLDER)
    for candidate in (scrubbed, edited):  # only if nothing but the secrets changed
        if _loads_as(candidate, expected):
            return candidate
    # the text could not be edited in place (an odd layout): write it out again
    return yaml.safe_dump(expected, sort_keys=False)


def _inner(data, at: tuple[str, ...]):
    for key in at:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _loads_as(text: str, expected) -> bool:
    try:
        return yaml.load(text, Loader=_LOADER) == expected
    except yaml.YAMLError:
        return False


def _get(node, key: str):
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _secret_nodes(manifest, patterns: list[str]) -> list:
    nodes = []
    stores = _get(manifest, "data_stores")
    if isinstance(stores, yaml.SequenceNode):
        for store in stores.value:
            password = _get(_get(store, "connection"), "password")
            if password is not None:
                nodes.append(password)
    env = _get(manifest, "env")
    if isinstance(env, yaml.MappingNode):
        for k, v in env.value:
            if isinstance(k, yaml.ScalarNode) and is_secret_name(k.value, patterns):
                nodes.append(v)
    return [n for n in nodes if not isinstance(n, yaml.ScalarNode) or _kept(n.value)]


_PREFIX = re.compile(r"^(?:[&!]\S*\s+)+")  # an anchor or a tag before the value: kept


def _replacement(span: str) -> str:
    prefix = _PREFIX.match(span)
    kept = prefix.group(0) if prefix else ""
    trailing = "\n" if span.endswith("\n") else ""  # a block scalar ends its line
    return kept + _QUOTED + trailing


def _redact_data(manifest, patterns: list[str]) -> None:
    if not isinstance(manifest, dict):
        return
    for store in manifest.get("data_stores") or []:
        conn = store.get("connection") if isinstance(store, dict) else None
        if isinstance(conn, dict) and _kept(conn.get("password")):
            conn["password"] = PLACEHOLDER
    env = manifest.get("env")
    if isinstance(env, dict):
        for k in env:
            if is_secret_name(str(k), patterns) and _kept(env[k]):
                env[k] = PLACEHOLDER


class Vault:
    """Runs' secrets, a JSON file a run in a folder only dlaasd's user may read."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def path(self, run_id: str) -> Path:
        return self.root / f"{run_id}.json"

    def put(self, run_id: str, secrets: Secrets) -> None:
        if not secrets:
            return
        tmp = self.root / f".{run_id}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(secrets.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(run_id))

    def get(self, run_id: str) -> Secrets:
        try:
            fd = os.open(self.path(run_id), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return Secrets()
        with os.fdopen(fd) as f:
            return Secrets.from_json(json.load(f))

    def remove(self, run_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(run_id).unlink()

    def run_ids(self) -> set[str]:
        return {p.stem for p in self.root.glob("*.json")}
