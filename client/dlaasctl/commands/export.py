"""`dlaasctl export k8s MANIFEST`: the Kubernetes objects a run would become, as YAML.

Made here, without the daemon, from the manifest and dlaasd's config (the same file
dlaasd reads, or --config), so an admin can review them or apply them without dlaasd.
The Secret's store keys are left as placeholders: fill them in (and upload the model to
the definitions bucket as `<run id>/model.zip`) to apply it.
"""

from __future__ import annotations

import argparse
import secrets
import string
import sys
from pathlib import Path

from ..http import Client
from . import Command, arg


def k8s(c: Client, args: argparse.Namespace) -> int:
    try:  # the daemon's own parsing and config: the export is what dlaasd would make
        import yaml

        from dlaasd import admission, config, k8s_objects, manifest
    except ImportError as exc:
        print(
            f"dlaasctl: export needs dlaasd's modules beside the client ({exc}); "
            "install dlaasd (pip install dlaasd, or scripts/setup in its repository)",
            file=sys.stderr,
        )
        return 1

    path = Path(args.manifest)
    if path.is_dir():
        path = path / "manifest.yml"
    try:
        m = manifest.parse(path.read_bytes(), str(path))
        cfg = config.load(args.config)
        image = admission.resolve_image(m, cfg.frameworks)
        settings = k8s_objects.settings(cfg.kubernetes, cfg.containers.halt_grace)
        run_id = args.run_id or _new_id()
        shape = k8s_objects.manifest_shape(run_id, m, image, cfg.containers.user, cfg.secret_env)
        objects = k8s_objects.objects(shape, settings, _node_job(run_id, m, cfg), "")
    except OSError as exc:
        print(f"dlaasctl: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    except (manifest.SchemaError, admission.AdmissionError) as exc:
        print(f"dlaasctl: {exc}", file=sys.stderr)
        return 1
    except (k8s_objects.UnknownGpuType, ValueError) as exc:
        print(f"dlaasctl: {path}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.dump_all(objects, Dumper=_dumper(yaml), sort_keys=False))
    return 0


def _dumper(yaml):
    """YAML's safe dumper, writing text of several lines (the scripts) as blocks."""

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return Dumper


def _new_id() -> str:
    """An id as dlaasd makes them (training- and nine letters or digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "training-" + "".join(secrets.choice(alphabet) for _ in range(9))


def _node_job(run_id: str, m, cfg) -> str:
    """The node job the pods' node program reads, as dlaasd would make it, with the
    store's keys left as placeholders. The pods fetch the model from the definitions
    bucket (`<run id>/model.zip`): upload it there when applying the objects by hand."""
    from dlaasd import k8s_objects
    from dlaasd.executors import Location
    from dlaasd.node import NodeJob
    from dlaasd.objectstore import Endpoint

    url = cfg.kubernetes.store_endpoint or cfg.store.endpoint or "<the S3 endpoint pods reach>"
    ours = Endpoint(url.rstrip("/"), "<access key>", "<secret key>")
    store = m.data_store
    own = store.remote if store else None
    theirs = Endpoint(own.auth_url.rstrip("/"), "<access key>", "<secret key>") if own else ours
    data = results = None
    if store and store.type != "mount_volume":
        if store.training_data:
            data = Location(theirs, store.training_data.bucket, store.training_data.prefix)
        if store.training_results:
            results = Location(theirs, store.training_results.bucket, f"{run_id}/")
    job = NodeJob(
        run_id=run_id,
        run_folder=k8s_objects.POD_RUN_FOLDER,
        report_dir=k8s_objects.POD_REPORTS,
        node_dir=k8s_objects.POD_NODE_DIR,
        specs=[],
        data=data,
        results=results or Location(ours, cfg.store.results_bucket, f"{run_id}/"),
        model=Location(ours, cfg.store.definitions_bucket, f"{run_id}/model.zip"),
    )
    return job.to_json()


COMMANDS = {
    "export k8s": Command(
        k8s,
        "print the Kubernetes objects (YAML) a manifest's run becomes on the kubernetes executor",
        [
            arg("manifest", metavar="MANIFEST", help="a manifest.yml, or the folder holding it"),
            arg("--config", help="dlaasd's config file (default: the one dlaasd reads)"),
            arg("--run-id", help="the run's id in the objects (default: a new one)"),
        ],
        json=False,
    ),
}
