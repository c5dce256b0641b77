"""Submit-time checks that depend on this machine and its config (no I/O).

A manifest that parses can still be refused here: a framework with no image (C101), a
network or volume the config does not allow (C101), or a request the machine can never
satisfy (C104), which would otherwise wait in the queue forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .codes import Code
from .config import Config
from .manifest import Manifest
from .scheduler import Request, impossible
from .schema import Problem, suggest


class AdmissionError(ValueError):
    def __init__(self, code: Code, problems: list[Problem]):
        self.code = code
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


@dataclass
class Admitted:
    image: str
    warnings: list[str] = field(default_factory=list)


def request_of(run_id: str, m: Manifest) -> Request:
    return Request(run_id, m.total_gpus, m.cpus * m.learners, m.memory * m.learners, m.gpu_type)


def resolve_image(m: Manifest, frameworks: dict[str, dict[str, str]]) -> str:
    """framework.image wins; 'custom' takes the version; else the config's table."""
    fw = m.framework
    if fw.image:
        image = fw.image
    elif fw.name == "custom":
        image = fw.version
    else:
        versions = frameworks.get(fw.name)
        if versions is None:
            known = ", ".join(sorted(frameworks)) + ", custom"
            raise AdmissionError(
                Code.BAD_MANIFEST,
                [
                    Problem(
                        "framework.name",
                        f"found {fw.name!r}, which has no image on this machine"
                        f"{suggest(fw.name, frameworks)} (known: {known}; or set framework.image)",
                    )
                ],
            )
        template = versions.get(fw.version) or versions.get("*")
        if template is None:
            raise AdmissionError(
                Code.BAD_MANIFEST,
                [
                    Problem(
                        "framework.version",
                        f"found {fw.version!r}; versions of {fw.name} here: "
                        f"{', '.join(sorted(versions))}{suggest(fw.version, versions)}",
                    )
                ],
            )
        if "{version}" in template and not fw.version:
            raise AdmissionError(
                Code.BAD_MANIFEST,
                [
                    Problem(
                        "framework.version",
                        f"missing; the image for {fw.name} ({template}) needs it",
                    )
                ],
            )
        image = template.replace("{version}", fw.version)
    if fw.image_tag:
        repo = image.split("@", 1)[0]  # a digest pins one image: the tag replaces it
        repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
        image = f"{repo}:{fw.image_tag}"
    return image


def admit(m: Manifest, config: Config, gpu_names: Sequence[str] | None) -> Admitted:
    """`gpu_names` None: a cluster's scheduler knows what its nodes have (sbatch refuses
    an impossible request with C104), this machine's capacity does not count."""
    image = resolve_image(m, config.frameworks)
    problems = []
    if m.network and not config.containers.allow_network:
        problems.append(
            Problem(
                "network",
                "this dlaasd does not allow networked runs; remove "
                "the key, or ask the admin to set containers.allow_network",
            )
        )
    store = m.data_store
    if store and store.type == "mount_volume" and store.connection:
        path = volume_path(m)
        allowed = [Path(v).resolve() for v in config.containers.allowed_volumes]
        if path is None or not any(path == a or a in path.parents for a in allowed):
            where = ", ".join(map(str, allowed)) or "none are configured"
            problems.append(
                Problem(
                    "data_stores[0].connection.path",
                    f"{store.connection.path!r} "
                    f"is not inside a folder the config allows ({where}); the "
                    "admin can add it to containers.allowed_volumes",
                )
            )
    if config.executor == "kubernetes" and store and store.type == "mount_volume":
        problems.append(
            Problem(
                "data_stores[0].type",
                "a mounted volume is not there in a Kubernetes pod; put the data in the "
                "object store (dlaasctl data upload) and use an s3_datastore",
            )
        )
    if problems:
        raise AdmissionError(Code.BAD_MANIFEST, problems)
    if config.executor == "kubernetes" and m.gpu_type not in ("", *config.kubernetes.gpu_types):
        known = ", ".join(sorted(config.kubernetes.gpu_types)) or "none"
        raise AdmissionError(
            Code.IMPOSSIBLE_REQUEST,
            [
                Problem(
                    "gpu_type",
                    f"{m.gpu_type!r} is not a GPU type of the cluster (its kubernetes.gpu_types:"
                    f" {known}); use one of them or leave gpu_type out",
                )
            ],
        )
    if gpu_names is None:
        return Admitted(image, list(m.notes))
    req = request_of("", m)
    # config.load fills in the machine's memory where the config leaves it out
    reasons = impossible(req, config.capacity.cpus, config.capacity.memory or 0, gpu_names)
    if reasons:
        per = f" (in all: the manifest's amounts × {m.learners} learners)" if m.learners > 1 else ""
        raise AdmissionError(Code.IMPOSSIBLE_REQUEST, [Problem(f, r + per) for f, r in reasons])
    return Admitted(image, list(m.notes))


def volume_path(m: Manifest) -> Path | None:
    """The host folder a mount_volume store mounts as DATA_DIR."""
    store = m.data_store
    if (
        not store
        or store.type != "mount_volume"
        or not store.connection
        or not store.connection.path
    ):
        return None
    sub = store.training_data.container if store.training_data else ""
    return (Path(store.connection.path) / sub).resolve()
