"""The FfDL v1 `manifest.yml`, accepted unchanged, plus dlaasd's few extensions.

Parsing is pure: no I/O, no daemon state. Checks that depend on the machine (enough GPUs?
network allowed?) live in `admission`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Literal

from . import schema
from .schema import Parse, Problem, Rule, SchemaError
from .units import parse_duration, parse_size

Size = Annotated[int, Parse(parse_size, "a size with a unit, such as 512MiB, 1Gb, 2GiB or 1000MB")]
Duration = Annotated[float, Parse(parse_duration, "seconds, or a duration such as 90s, 30m, 2h")]
NonNegativeInt = Annotated[int, Rule(lambda v: v >= 0, "a whole number, 0 or more")]
PositiveInt = Annotated[int, Rule(lambda v: v >= 1, "a whole number, 1 or more")]
PositiveFloat = Annotated[float, Rule(lambda v: v > 0, "a number more than 0, such as 0.5 or 2")]


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError("")


EnvValue = Annotated[str, Parse(_env_value, "text, a number or true/false")]


def _bucket(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = getattr(value, "text", str(value))  # `container: 2024` is a fine name
    if not isinstance(value, str):
        raise ValueError("")
    problem = bucket_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Bucket = Annotated[
    str, Parse(_bucket, "an S3 bucket name: 3 to 63 lowercase letters, digits, '-' or '.'")
]

# The variables dlaasd sets in every container; a manifest may not override them.
RESERVED_ENV = frozenset(
    {
        "JOB_STATE_DIR",
        "MODEL_DIR",
        "DATA_DIR",
        "RESULT_DIR",
        "CHECKPOINT_DIR",
        "LOG_DIR",
        "TRAINING_ID",
        "GPU_COUNT",
        "LEARNER_ID",
        "NUM_LEARNERS",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "HOME",
    }
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass
class TrainingData:
    container: Bucket = schema.spec(help="the bucket that holds the training data")
    prefix: str = ""  # extension: only the objects under this prefix


@dataclass
class TrainingResults:
    container: Bucket = schema.spec(help="the bucket the results are written to")


@dataclass
class Connection:
    auth_url: str = ""
    user_name: str = ""
    password: str = ""
    type: str = ""
    name: str = ""
    path: str = ""
    region: str = ""


@dataclass
class DataStore:
    id: str = schema.spec(help="a name for this data store")
    type: Literal["s3_datastore", "mount_cos", "mount_volume"] = schema.spec(
        help="s3_datastore or mount_cos (staged from the object store), or mount_volume"
    )
    training_data: TrainingData | None = None
    training_results: TrainingResults | None = None
    connection: Connection | None = None


@dataclass
class Framework:
    name: str = schema.spec(help="the framework, such as pytorch, python, tensorflow or custom")
    command: str = schema.spec(help="the shell command that starts training")
    version: str = ""
    image_tag: str = ""
    image: str = ""  # extension: an explicit image, overriding the config's table


@dataclass
class EvaluationMetrics:
    type: Literal["emetrics", "tensorboard", "log"] = "emetrics"
    in_: str = schema.spec(key="in", default="")
    pattern: str = ""  # extension for `type: log`: a regular expression with named groups


@dataclass
class Manifest:
    name: str = schema.spec(help="a short name for the run")
    framework: Framework = schema.spec(help="name, version and command")
    description: str = ""
    version: str = "1.0"
    gpus: NonNegativeInt = 0
    cpus: PositiveFloat = 1.0
    memory: Size = 1024**3
    learners: PositiveInt = 1
    gpu_type: str = ""
    data_stores: list[DataStore] = field(default_factory=list)
    evaluation_metrics: EvaluationMetrics | None = None
    # extensions
    timeout: Duration | None = None
    env: dict[str, EnvValue] = field(default_factory=dict)
    network: bool = False

    @property
    def data_store(self) -> DataStore | None:
        """FfDL uses the first data store."""
        return self.data_stores[0] if self.data_stores else None

    @property
    def total_gpus(self) -> int:
        return self.gpus * self.learners


class ManifestError(SchemaError):
    code = "C101"


def parse(text: str | bytes, source: str = "manifest.yml") -> Manifest:
    """Parse and validate a manifest; raise ManifestError listing every problem."""
    manifest = schema.parse_document(
        Manifest,
        text,
        source,
        ManifestError,
        "name, framework, ...",
        lambda _, d, ln: _cross_checks(d, ln),
    )
    manifest.framework.command = join_continuations(manifest.framework.command)
    return manifest


def join_continuations(command: str) -> str:
    """FfDL writes long commands as `command: >` with more-indented continuation lines,
    which YAML keeps as separate lines; under `sh -c` each would run on its own. Join a
    line that starts with blanks to the one before (unless that one ends with `\\`)."""
    return re.sub(r"(?<!\\)\n[ \t]+", " ", command).strip()


def _cross_checks(data: dict, lines: dict[str, int]) -> list[Problem]:
    problems: list[Problem] = []

    def fail(path: str, message: str) -> None:
        problems.append(Problem(path, message, schema.line_of(lines, path)))

    def text(value: object) -> str:
        return value if isinstance(value, str) else ""

    fw = data.get("framework") if isinstance(data.get("framework"), dict) else {}
    if isinstance(data.get("name"), str) and not data["name"].strip():
        fail("name", "is empty; give the run a short name")
    if isinstance(fw.get("command"), str) and not fw["command"].strip():
        fail("framework.command", "is empty; give the shell command that starts training")
    if fw.get("name") == "custom" and not (fw.get("version") or fw.get("image")):
        fail("framework.version", "missing; with framework name 'custom' the version is the image")
    try:
        if parse_size(data.get("memory", "1GiB")) < 16 * 1024**2:
            fail("memory", "is below 16MiB, too little for a container; ask for 256MiB or more")
    except ValueError:
        pass  # reported by the schema
    env = data.get("env") if isinstance(data.get("env"), dict) else {}
    for name in env:
        if not ENV_NAME.match(name):
            fail(
                f"env.{name}",
                "is not a valid variable name (letters, digits and _, not starting with a digit)",
            )
        elif name in RESERVED_ENV:
            fail(f"env.{name}", "is set by dlaasd in every container and cannot be overridden")
    stores = data.get("data_stores") if isinstance(data.get("data_stores"), list) else []
    for i, store in enumerate(s for s in stores if isinstance(s, dict)):
        base = f"data_stores[{i}]"
        conn = store.get("connection") if isinstance(store.get("connection"), dict) else {}
        if store.get("type") == "mount_volume":
            if not text(conn.get("path")):
                fail(f"{base}.connection.path", "missing; mount_volume needs the host folder")
            continue
        url = text(conn.get("auth_url"))
        if url and not re.match(r"^https?://[^/\s]+", url):
            where = f"{base}.connection.auth_url"
            fail(where, f"found {url!r}; expected an http:// or https:// URL")
    metrics = data.get("evaluation_metrics")
    if isinstance(metrics, dict) and metrics.get("type") == "log":
        pattern = text(metrics.get("pattern"))
        where = "evaluation_metrics.pattern"
        if not pattern:
            fail(where, "missing; type 'log' needs a regular expression with named groups")
        else:
            try:
                if not re.compile(pattern).groupindex:
                    fail(where, "has no named group; write e.g. 'loss=(?P<loss>[0-9.eE+-]+)'")
            except re.error as exc:
                fail(where, f"is not a valid regular expression: {exc}")
    return problems


def bucket_problem(name: str) -> str | None:
    """Why `name` is not a valid S3 bucket name, with the name to use instead."""
    if _BUCKET.match(name) and ".." not in name:
        return None
    fixed = re.sub(r"\.\.+", ".", re.sub(r"[^a-z0-9.-]+", "-", name.lower())).strip("-.")[:63]
    if not _BUCKET.match(fixed):
        fixed = (fixed + "-data").strip("-.")
    return f"S3 and MinIO do not allow this name; use {fixed!r}"
