"""The FfDL v1 `manifest.yml`, accepted unchanged, plus dlaasd's few extensions.

Parsing is pure: no I/O, no daemon state. Checks that depend on the machine (enough GPUs?
network allowed?) live in `admission`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Literal
from urllib.parse import urlsplit

from . import buckets, schema
from .codes import Code
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
    """A bucket name as the config must write it: one the store accepts."""
    value = _bucket_name(value)
    problem = bucket_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _bucket_name(value: object) -> str:
    """A bucket name as a manifest may write it: any text (`container: 2024` too); the
    store gets `buckets.store_name` of it."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = getattr(value, "text", str(value))
    if not isinstance(value, str) or not value.strip():
        raise ValueError("")
    return value


Bucket = Annotated[str, Parse(_bucket, f"an S3 bucket name: {buckets.ALLOWED}")]
BucketName = Annotated[str, Parse(_bucket_name, "a bucket name (text)")]

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


@dataclass
class TrainingData:
    container: BucketName = schema.spec(help="the bucket that holds the training data")
    prefix: str = ""  # extension: only the objects under this prefix

    @property
    def bucket(self) -> str:
        """The bucket in the store (`container` as the bucket-name rule maps it)."""
        return buckets.store_name(self.container)


@dataclass
class TrainingResults:
    container: BucketName = schema.spec(help="the bucket the results are written to")

    @property
    def bucket(self) -> str:
        return buckets.store_name(self.container)


@dataclass
class Connection:
    auth_url: str = ""
    user_name: str = ""
    password: str = ""
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

    @property
    def remote(self) -> Connection | None:
        """The S3 endpoint this store names, or None for this dlaasd's own store (no
        connection, or one that names no endpoint usable here: see `connection_note`)."""
        conn = self.connection
        if self.type == "mount_volume" or not conn or not conn.auth_url.strip():
            return None
        if connection_note(conn):
            return None
        return conn


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
class Notify:
    """Extension: webhooks to tell of the run's final status (within the config's
    notify.allowed_webhooks)."""

    webhooks: list[str] = field(default_factory=list)


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
    notify: Notify | None = None
    # what submit says about keys taken another way or not used (see `parse`)
    notes: list[str] = field(default_factory=list, init=False)

    @property
    def data_store(self) -> DataStore | None:
        """FfDL uses the first data store."""
        return self.data_stores[0] if self.data_stores else None

    @property
    def total_gpus(self) -> int:
        return self.gpus * self.learners

    def buckets(self) -> list[dict[str, str]]:
        """The buckets the run uses: the manifest's name and the store's for each."""
        store = self.data_store
        if not store or store.type == "mount_volume":
            return []
        parts = (("training data", store.training_data), ("results", store.training_results))
        return [
            {"use": use, "manifest": part.container, "store": part.bucket}
            for use, part in parts
            if part
        ]


class ManifestError(SchemaError):
    code = Code.BAD_MANIFEST


def parse(text: str | bytes, source: str = "manifest.yml") -> Manifest:
    """Parse and validate a manifest; raise ManifestError listing every problem. The
    manifest's `notes` say, one line each, what FfDL wrote that is taken another way here
    (a bucket name, a connection) or not used at all: submit shows them as warnings."""
    notes: list[str] = []
    manifest = schema.parse_document(
        Manifest,
        text,
        source,
        ManifestError,
        "name, framework, ...",
        lambda _, d, ln: _cross_checks(d, ln),
        lambda d: notes.extend(_ffdl_keys(d)),
    )
    manifest.framework.command = join_continuations(manifest.framework.command)
    manifest.notes = notes + _notes(manifest)
    return manifest


# FfDL v1 keys that dlaasd accepts and does not use, and why; each one present is said at
# submit. (`connection.*` stands for the connection of any data store.)
IGNORED = {
    "storage": "disk space is not limited per run here",
    "evaluation_metrics.image_tag": "FfDL's metrics-collector image; dlaasd reads metrics itself",
    "evaluation_metrics.imagetag": "FfDL's metrics-collector image; dlaasd reads metrics itself",
    "evaluation_metrics.line_lookahead": "a setting of FfDL's regex_extractor",
    "evaluation_metrics.linelookahead": "a setting of FfDL's regex_extractor",
    "evaluation_metrics.eventTypes": "every scalar in the TensorBoard events is read",
    "evaluation_metrics.event_types": "every scalar in the TensorBoard events is read",
    "evaluation_metrics.groups": (
        "FfDL's regex_extractor groups are not read; for metrics from log lines use "
        "type: log with a pattern (README)"
    ),
    "connection.type": "the data store's own type says how it is reached",
    "connection.name": "only a label in FfDL",
    "connection.domain_name": "a Swift setting; the store here speaks S3",
    "connection.project_id": "a Swift setting; the store here speaks S3",
}
# FfDL's names for its metrics collectors, as the types dlaasd has (FfDL's
# fetchImageNameFromEvaluationMetrics takes the same synonyms).
METRICS_TYPES = {
    "emetrics_file": "emetrics",
    "emetrics_file_extractor": "emetrics",
    "optivist": "emetrics",
    "file": "emetrics",
    "tensorboard_extractor": "tensorboard",
    "simple_log_collector": "emetrics",
    "logger": "emetrics",
    "none": "emetrics",
    "null": "emetrics",
    "nil": "emetrics",
}
# Commands and frameworks whose learners expect to reach each other.
DISTRIBUTED_FRAMEWORKS = ("horovod", "pytorchmpi", "h2o3")
DISTRIBUTED_COMMAND = re.compile(
    r"mpirun|horovodrun|torch\.distributed|torchrun|PS_HOSTS|init_process_group|h2o3-cluster"
)
DISTRIBUTED_IMAGE = re.compile(r"mpi|horovod", re.I)  # tomcli/pytorch:0925mpi


def _ffdl_keys(data: dict) -> list[str]:
    """Take FfDL's keys that dlaasd does not use out of the raw manifest, and its names
    for metrics types in; one note for each."""
    notes = []

    def drop(parent: object, where: str, key: str, rule: str) -> None:
        if isinstance(parent, dict) and key in parent:
            value = parent.pop(key)
            text = getattr(value, "text", repr(value))  # a number as written
            shown = "" if isinstance(value, dict | list) else f" ({text})"
            notes.append(f"{where}{key}{shown} is not used: {IGNORED[rule]}")

    for path in IGNORED:
        parent_path, _, key = path.rpartition(".")
        if not parent_path:
            drop(data, "", key, path)
        elif parent_path == "evaluation_metrics":
            drop(data.get(parent_path), f"{parent_path}.", key, path)
    stores = data.get("data_stores")
    for i, store in enumerate(stores if isinstance(stores, list) else []):
        if isinstance(store, dict):
            for path in IGNORED:
                if path.startswith("connection."):
                    key = path.split(".", 1)[1]
                    drop(store.get("connection"), f"data_stores[{i}].connection.", key, path)
    metrics = data.get("evaluation_metrics")
    if not isinstance(metrics, dict):
        return notes
    kind = metrics.get("type")
    if isinstance(kind, str) and kind in METRICS_TYPES:
        metrics["type"] = METRICS_TYPES[kind]
    elif kind == "regex_extractor":
        if metrics.get("pattern"):
            metrics["type"] = "log"
        else:
            metrics["type"] = "emetrics"
            notes.append(
                "evaluation_metrics.type 'regex_extractor' without a pattern reads no log "
                "lines here; emetrics are read (for log lines: type: log with a pattern)"
            )
    return notes


def _notes(m: Manifest) -> list[str]:
    """What submit says about a manifest that parsed: names the store gets instead,
    connections not used, what its learners and image tag will not get."""
    notes = []
    for i, store in enumerate(m.data_stores):
        if i:
            notes.append(
                f"data_stores[{i}] ({store.id!r}) is not used: only the first data store is, "
                "as in FfDL"
            )
            continue
        if store.type != "mount_volume":
            for part in (store.training_data, store.training_results):
                note = buckets.mapped(part.container) if part else None
                if note:
                    notes.append(note)
        if store.connection and store.type != "mount_volume":
            note = connection_note(store.connection)
            if note:
                notes.append(f"data_stores[0].connection {note}")
    fw = m.framework
    if m.learners > 1 and (
        fw.name in DISTRIBUTED_FRAMEWORKS
        or DISTRIBUTED_COMMAND.search(fw.command)
        or (fw.name == "custom" and DISTRIBUTED_IMAGE.search(fw.version))
        or DISTRIBUTED_IMAGE.search(fw.image)
    ):
        notes.append(
            f"learners: {m.learners} start {m.learners} containers with no network between "
            "them: each runs the command on its own with LEARNER_ID and NUM_LEARNERS set; "
            "learners that reach each other (MPI, Horovod, torch.distributed, a parameter "
            "server, an H2O cluster) cannot here"
        )
    key, tag = ("image_tag", fw.image_tag) if fw.image_tag else ("version", fw.version)
    if re.search(r"gpu|cuda", tag, re.I) and m.gpus == 0:
        notes.append(
            f"framework.{key} {tag!r} names a GPU image, but gpus is 0: the run gets no GPU"
        )
    elif re.search(r"(^|[^a-z])cpu", tag, re.I) and m.gpus > 0:
        notes.append(
            f"framework.{key} {tag!r} names a CPU image, but the run asks for {m.gpus} GPU(s)"
        )
    return notes


_IN_CLUSTER = re.compile(r"(\.svc|\.svc\.cluster\.local|\.cluster\.local)\.?$")


def placeholder(value: str) -> bool:
    """An example's stand-in rather than a value: empty, or `<S3 access key>`."""
    value = value.strip()
    return not value or (value.startswith("<") and value.endswith(">"))


def _bare_word(url: str) -> bool:
    """`auth_url: test`: a word, not an address (FfDL's test manifest writes this)."""
    return bool(re.fullmatch(r"[A-Za-z0-9_-]+", url.strip()))


def connection_note(conn: Connection) -> str | None:
    """Why a connection block names no S3 endpoint to use here, so that the run uses this
    dlaasd's store (said at submit), or None when it names one."""
    url = conn.auth_url.strip()
    if not url:
        if conn.user_name or conn.password:
            return (
                "has no auth_url: its user_name and password are not used; the run uses "
                "this dlaasd's store"
            )
        return None
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # "http://[x": the cross-checks say what is wrong with it
        host = ""
    if _IN_CLUSTER.search(host):
        return (
            f"auth_url {url!r} is FfDL's in-cluster object store, which is not here: the run "
            "uses this dlaasd's store (the user_name and password are not used)"
        )
    stand_ins = [k for k in ("auth_url", "user_name", "password") if placeholder(getattr(conn, k))]
    if _bare_word(url) and "auth_url" not in stand_ins:
        stand_ins.insert(0, "auth_url")
    if stand_ins:
        what = ", ".join(stand_ins[:-1]) + " and " * (len(stand_ins) > 1) + stand_ins[-1]
        verb = "is" if len(stand_ins) == 1 else "are"
        return f"{what} {verb} empty or a placeholder: the run uses this dlaasd's store"
    return None


def join_continuations(command: str) -> str:
    """FfDL writes long commands as `command: >` with more-indented continuation lines,
    which YAML keeps as separate lines; under `sh -c` each would run on its own. Join a
    line that starts with blanks to the one before (unless that one ends with `\\`)."""
    return re.sub(r"(?<!\\)\n[ \t]+", " ", command).strip()


def _section(value: object) -> dict:
    """A mapping of the raw YAML, or an empty one where it is something else (the schema
    reports that)."""
    return value if isinstance(value, dict) else {}


def _items(value: object) -> list:
    return value if isinstance(value, list) else []


def _cross_checks(data: dict, lines: dict[str, int]) -> list[Problem]:
    problems: list[Problem] = []

    def fail(path: str, message: str) -> None:
        problems.append(Problem(path, message, schema.line_of(lines, path)))

    def text(value: object) -> str:
        return value if isinstance(value, str) else ""

    fw = _section(data.get("framework"))
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
    env = _section(data.get("env"))
    for name in env:
        if not ENV_NAME.match(name):
            fail(
                f"env.{name}",
                "is not a valid variable name (letters, digits and _, not starting with a digit)",
            )
        elif name in RESERVED_ENV:
            fail(f"env.{name}", "is set by dlaasd in every container and cannot be overridden")
    stores = _items(data.get("data_stores"))
    seen: dict[str, tuple[str, str]] = {}  # bucket in the store -> (name, field) using it
    for i, store in enumerate(s for s in stores if isinstance(s, dict)):
        base = f"data_stores[{i}]"
        conn = _section(store.get("connection"))
        if store.get("type") == "mount_volume":
            if not text(conn.get("path")):
                fail(f"{base}.connection.path", "missing; mount_volume needs the host folder")
            continue
        url = text(conn.get("auth_url"))
        if url and not (placeholder(url) or _bare_word(url) or re.match(r"^https?://[^/\s]+", url)):
            where = f"{base}.connection.auth_url"
            fail(where, f"found {url!r}; expected an http:// or https:// URL")
        for part in ("training_data", "training_results"):
            section = _section(store.get(part))
            name = section.get("container")
            if not isinstance(name, str | int) or isinstance(name, bool):
                continue
            name = getattr(name, "text", str(name))
            where = f"{base}.{part}.container"
            used = buckets.store_name(name)
            other, other_where = seen.setdefault(used, (name, where))
            if other != name:
                fail(
                    where,
                    f"{name!r} and {other!r} ({other_where}) are both stored as bucket "
                    f"{used!r} (README: bucket names); rename one of them",
                )
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
    problem = buckets.problem(name)
    if problem is None:
        return None
    return f"{problem}; use {buckets.store_name(name)!r}"
