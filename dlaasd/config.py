"""Daemon settings: the embedded dlaasd.yaml, then a config file, env, and flags.

The embedded file is both the defaults and their documentation, so the two cannot drift.
"""

from __future__ import annotations

import grp
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from dlaasctl.routes import MAX_PRIORITY as PRIORITY_BOUND

from . import executors, schema
from .manifest import Bucket, Duration, PositiveInt, Size
from .scheduler import Limits
from .schema import Parse, Problem, Rule, SchemaError
from .units import parse_duration, parse_size

OptionalSize = Annotated[
    int | None,
    Parse(lambda v: None if v in ("", None) else parse_size(v), 'a size such as 16GiB, or ""'),
]
NonNegativeFloat = Annotated[float, Rule(lambda v: v >= 0, "a number, 0 or more")]
NonNegativeInt = Annotated[int, Rule(lambda v: v >= 0, "a whole number, 0 or more")]
OptionalDuration = Annotated[
    float,
    Parse(
        lambda v: 0.0 if v in ("", 0, None) else parse_duration(v), "a duration such as 10m, or 0"
    ),
]
Priority = Annotated[
    int,
    Rule(lambda v: -PRIORITY_BOUND <= v <= PRIORITY_BOUND, "a whole number from -1000 to 1000"),
]


def _uid_gid(value: object) -> str:
    parts = str(value).split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError("")
    return str(value)


UidGid = Annotated[str, Parse(_uid_gid, 'numeric "uid:gid", such as "65534:65534"')]
ExecutorName = Annotated[
    str, Rule(lambda v: v in executors.names(), f"one of: {', '.join(executors.names())}")
]

SYSTEM_CONFIG = Path("/etc/dlaas/dlaasd.yaml")


@dataclass
class Capacity:
    cpus: NonNegativeFloat
    memory: OptionalSize


@dataclass
class Containers:
    user: UidGid
    allow_network: bool
    allowed_volumes: list[str]
    halt_grace: Duration
    pids_limit: PositiveInt
    pull_missing_images: bool
    cap_add: list[str]


@dataclass
class ObjectStoreSettings:
    endpoint: str
    access_key: str
    secret_key: str
    credentials_file: str
    region: str
    minio_binary: str
    minio_address: str
    results_bucket: Bucket
    definitions_bucket: Bucket
    transfer_workers: PositiveInt
    upload_retry_for: Duration
    download_retry_for: Duration

    @property
    def bundled(self) -> bool:
        return not self.endpoint


@dataclass
class Cache:
    max_size: Size


@dataclass
class Results:
    keep_local: bool
    mirror_to_drop_dir: bool


@dataclass
class UserShare:
    """One user's own fair-share settings, over the defaults for everyone."""

    max_gpus: NonNegativeInt | None = None
    max_running: NonNegativeInt | None = None
    priority_min: Priority | None = None
    priority_max: Priority | None = None


@dataclass
class FairShare:
    max_gpus_per_user: NonNegativeInt
    max_running_per_user: NonNegativeInt
    priority_min: Priority
    priority_max: Priority
    aging: OptionalDuration
    users: dict[str, UserShare]

    def limits(self, user: str) -> Limits:
        own = self.users.get(user) or UserShare()
        return Limits(
            self.max_gpus_per_user if own.max_gpus is None else own.max_gpus,
            self.max_running_per_user if own.max_running is None else own.max_running,
        )

    def priority_range(self, user: str) -> tuple[int, int]:
        """The priorities `user` may give their own runs at submit."""
        own = self.users.get(user) or UserShare()
        lo = self.priority_min if own.priority_min is None else own.priority_min
        hi = self.priority_max if own.priority_max is None else own.priority_max
        return lo, hi


def _address(value: object) -> str:
    from .prometheus import parse_address

    if value in ("", None):
        return ""
    host, port = parse_address(str(value))
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


TcpAddress = Annotated[
    str, Parse(_address, '"host:port" such as 127.0.0.1:9464, a port (on loopback), or ""')
]


@dataclass
class PrometheusSettings:
    address: TcpAddress


def _url(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError("")
    return value


WebhookUrl = Annotated[str, Parse(_url, "a URL such as http://127.0.0.1:8080/hook")]


@dataclass
class NotifySettings:
    command: list[str]
    webhooks: list[WebhookUrl]
    allowed_webhooks: list[WebhookUrl]
    timeout: Duration
    retry_for: Duration


@dataclass
class DashboardSettings:
    address: TcpAddress


@dataclass
class Slurm:
    partition: str
    account: str
    qos: str
    sbatch_options: list[str]
    store_endpoint: str
    python: str
    node_dir: str
    time_margin: Duration


@dataclass
class Kubernetes:
    """The `kubernetes` executor's cluster (README: Running on Kubernetes)."""

    kubeconfig: str
    context: str
    namespace: str
    local_queue: str
    node_image: str
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"]
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    gpu_types: dict[str, dict[str, str]]
    ttl_after_finished: Duration
    master_port: PositiveInt
    store_endpoint: str


@dataclass
class Config:
    state_dir: str
    socket: str
    socket_group: str
    visibility: Literal["queue", "lab"]
    admin_group: str
    secret_env: list[str]
    drop_dir: str
    drop_settle: Duration
    drop_grace: Duration
    log_level: Literal["debug", "info", "warning", "error"]
    executor: ExecutorName
    slurm: Slurm
    capacity: Capacity
    containers: Containers
    frameworks: dict[str, dict[str, str]]
    store: ObjectStoreSettings
    cache: Cache
    results: Results
    fair_share: FairShare
    prometheus: PrometheusSettings
    notify: NotifySettings
    dashboard: DashboardSettings
    kubernetes: Kubernetes
    # Where the settings came from, for --print-config and error messages.
    source: str = field(default="embedded defaults", init=False)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def socket_path(self) -> Path:
        return Path(self.socket)

    @property
    def drop_path(self) -> Path:
        return Path(self.drop_dir)


class ConfigError(SchemaError):
    pass


def system_mode() -> bool:
    return os.geteuid() == 0


def default_config_file() -> Path:
    if system_mode():
        return SYSTEM_CONFIG
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dlaas" / "dlaasd.yaml"


def embedded_text() -> str:
    return resources.files("dlaasd").joinpath("dlaasd.yaml").read_text()


def load(
    path: str | Path | None = None,
    overrides: dict | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build the effective config. `path` None means the default file, if it exists."""
    env = os.environ if env is None else env
    data, _ = schema.load_yaml(embedded_text(), "embedded dlaasd.yaml")
    lines: dict[str, int] = {}
    source = "embedded defaults"
    path = path or env.get("DLAAS_CONFIG")
    explicit = path is not None
    file = Path(path) if path else default_config_file()
    if explicit and not file.is_file():
        raise ConfigError([Problem("", f"config file {file} does not exist")], str(file))
    if file.is_file():
        try:
            user, lines = schema.load_yaml(file.read_text(), str(file))
        except SchemaError as exc:
            raise ConfigError(exc.problems, str(file)) from None
        if user is not None and not isinstance(user, dict):
            raise ConfigError([Problem("", "expected a mapping of keys", 1)], str(file))
        data = _merge(data, user or {})
        source = str(file)
    for var, key in (
        ("DLAAS_STATE_DIR", "state_dir"),
        ("DLAAS_SOCKET", "socket"),
        ("DLAAS_LOG_LEVEL", "log_level"),
    ):
        if env.get(var):
            data[key] = env[var]
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    try:
        config = schema.load(Config, data, lines, source)
    except SchemaError as exc:
        raise ConfigError(exc.problems, source) from None
    config.source = source
    _resolve(config, env)
    _check(config, source, lines)
    return config


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        # frameworks replace per framework name; everything else merges key by key
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "frameworks":
            out[k] = _merge(out[k], v)
        elif k == "frameworks" and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def _resolve(c: Config, env) -> None:
    """Fill the empty paths with the defaults of user or system mode."""
    if not c.state_dir:
        if system_mode():
            c.state_dir = "/var/lib/dlaas"
        else:
            base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
            c.state_dir = str(Path(base) / "dlaas")
    c.state_dir = str(Path(c.state_dir).expanduser().absolute())
    if not c.socket:
        if system_mode():
            c.socket = "/run/dlaas/dlaasd.sock"
        elif env.get("XDG_RUNTIME_DIR"):
            c.socket = str(Path(env["XDG_RUNTIME_DIR"]) / "dlaas" / "dlaasd.sock")
        else:
            c.socket = str(Path(c.state_dir) / "dlaasd.sock")
    c.socket = str(Path(c.socket).expanduser().absolute())
    if not c.drop_dir:
        c.drop_dir = str(Path(c.state_dir) / "inbox")
    c.drop_dir = str(Path(c.drop_dir).expanduser().absolute())
    if not c.socket_group and system_mode() and _group_exists("dlaas"):
        c.socket_group = "dlaas"
    if not c.capacity.cpus:
        c.capacity.cpus = float(os.cpu_count() or 1)
    if c.capacity.memory is None:
        c.capacity.memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if c.store.credentials_file:
        try:
            creds = json.loads(Path(c.store.credentials_file).read_text())
            c.store.access_key, c.store.secret_key = creds["access_key"], creds["secret_key"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            why = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ConfigError(
                [
                    Problem(
                        "store.credentials_file",
                        f"cannot read {why}; expected a "
                        'JSON file {"access_key": ..., "secret_key": ...}',
                    )
                ],
                c.source,
            ) from None


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _check(c: Config, source: str, lines: dict[str, int]) -> None:
    problems: list[Problem] = []
    for key in ("socket_group", "admin_group"):
        group = getattr(c, key)
        if group and not _group_exists(group):
            problems.append(
                Problem(
                    key,
                    f"group {group!r} does not exist; create it (groupadd) or leave the key empty",
                )
            )
    if c.store.endpoint:
        if not c.store.endpoint.startswith(("http://", "https://")):
            problems.append(
                Problem(
                    "store.endpoint",
                    f"found {c.store.endpoint!r}; expected a URL such as http://127.0.0.1:9000",
                )
            )
        if not (c.store.access_key and c.store.secret_key):
            problems.append(
                Problem(
                    "store.access_key",
                    "an external store needs access_key and secret_key (or credentials_file)",
                )
            )
    shares: list[tuple[str, int | None, int | None]] = [
        ("fair_share", c.fair_share.priority_min, c.fair_share.priority_max)
    ]
    shares += [
        (f"fair_share.users.{u}", s.priority_min, s.priority_max)
        for u, s in c.fair_share.users.items()
    ]
    for where, lo, hi in shares:
        if lo is not None and hi is not None and lo > hi:
            problems.append(Problem(f"{where}.priority_min", f"{lo} is above priority_max ({hi})"))
    if c.slurm.store_endpoint and not c.slurm.store_endpoint.startswith(("http://", "https://")):
        problems.append(
            Problem(
                "slurm.store_endpoint",
                f"found {c.slurm.store_endpoint!r}; expected the URL the nodes reach the "
                "object store at, such as http://storage.cluster:9000",
            )
        )
    if c.executor == "kubernetes":
        problems += _kubernetes_problems(c.kubernetes)
    for name, versions in c.frameworks.items():
        if not versions:
            problems.append(Problem(f"frameworks.{name}", "maps no version to an image"))
    if problems:
        problems = [Problem(p.path, p.message, schema.line_of(lines, p.path)) for p in problems]
        raise ConfigError(problems, source)


# a Kubernetes name: a DNS label (RFC 1123), as namespaces and LocalQueues must be
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _kubernetes_problems(k: Kubernetes) -> list[Problem]:
    """What `executor: kubernetes` needs of its section, each with the fix."""
    problems = []
    if k.kubeconfig:
        if not Path(k.kubeconfig).expanduser().is_file():
            problems.append(
                Problem(
                    "kubernetes.kubeconfig",
                    f"{k.kubeconfig} is not a file; give the kubeconfig of dlaasd's "
                    "ServiceAccount (README: Running on Kubernetes), or leave it empty when "
                    "dlaasd runs in the cluster",
                )
            )
    elif not IN_CLUSTER_TOKEN.is_file():
        problems.append(
            Problem(
                "kubernetes.kubeconfig",
                "empty, and dlaasd does not run in a cluster (no ServiceAccount token at "
                f"{IN_CLUSTER_TOKEN}); give the kubeconfig of dlaasd's ServiceAccount",
            )
        )
    for key in ("namespace", "local_queue"):
        value = getattr(k, key)
        if not _DNS_LABEL.fullmatch(value):
            problems.append(
                Problem(
                    f"kubernetes.{key}",
                    f"found {value!r}; expected a Kubernetes name (lower-case letters, "
                    "digits and '-', at most 63), such as dlaas",
                )
            )
    if k.store_endpoint and not k.store_endpoint.startswith(("http://", "https://")):
        problems.append(
            Problem(
                "kubernetes.store_endpoint",
                f"found {k.store_endpoint!r}; expected the URL the pods reach the object "
                "store at, such as http://minio.storage.svc:9000",
            )
        )
    return problems


def printable(c: Config) -> dict:
    """The effective settings, with secrets masked."""
    out = schema.dump(c)
    for k in ("secret_key", "access_key"):
        if out["store"][k]:
            out["store"][k] = "********"
    return out
