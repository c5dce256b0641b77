"""dlaasd.config: embedded defaults, a user file on top, and refusals with lines."""

from __future__ import annotations

import json
import os

import pytest

from dlaasd import config, schema
from dlaasd.config import ConfigError

GiB = 1024**3


@pytest.fixture
def write(tmp_path):
    """Write a user config file; paths are pinned so root and users resolve alike."""

    def write(text: str = "", paths: bool = True):
        head = (
            f"state_dir: {tmp_path / 'state'}\nsocket: {tmp_path / 's.sock'}\n"
            f"drop_dir: {tmp_path / 'inbox'}\n"
            if paths
            else ""
        )
        path = tmp_path / "dlaasd.yaml"
        path.write_text(head + text)
        return path

    return write


def load(path, **kw):
    return config.load(path, env=kw.pop("env", {}), **kw)


def problems(path) -> list[schema.Problem]:
    with pytest.raises(ConfigError) as info:
        load(path)
    return info.value.problems


# --- defaults and merging -------------------------------------------------------------


def test_embedded_defaults_are_valid_on_their_own():
    data, _ = schema.load_yaml(config.embedded_text())
    c = schema.load(config.Config, data)
    assert c.log_level == "info"
    assert c.capacity.cpus == 0 and c.capacity.memory is None
    assert c.containers.user == "65534:65534"
    assert c.containers.allow_network is False and c.containers.allowed_volumes == []
    assert c.containers.halt_grace == 10.0 and c.containers.pids_limit == 4096
    assert c.frameworks["python"] == {"*": "dlaas/python:bookworm"}
    assert c.frameworks["tensorflow"] == {"*": "tensorflow/tensorflow:{version}"}
    assert c.store.bundled and c.store.results_bucket == "dlaas-results"
    assert c.store.upload_retry_for == 600.0 and c.store.download_retry_for == 120.0
    assert c.cache.max_size == 50 * GiB
    assert c.results.keep_local is False and c.results.mirror_to_drop_dir is True


def test_embedded_defaults_load_without_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "default_config_file", lambda: tmp_path / "absent.yaml")
    c = config.load(
        env={"DLAAS_STATE_DIR": str(tmp_path / "st"), "DLAAS_SOCKET": str(tmp_path / "s")}
    )
    assert c.source == "embedded defaults"
    assert c.state_dir == str(tmp_path / "st")
    assert c.socket == str(tmp_path / "s")
    assert c.drop_dir == str(tmp_path / "st" / "inbox")
    assert c.capacity.cpus == float(os.cpu_count() or 1)  # 0: the whole machine
    assert c.capacity.memory > 0
    assert c.store.bundled


def test_user_file_overrides_a_few_keys(write):
    path = write(
        "log_level: debug\ncapacity:\n  cpus: 4\ncontainers:\n  halt_grace: 1m\n"
        "  allow_network: true\n"
    )
    c = load(path)
    assert c.source == str(path)
    assert c.log_level == "debug"
    assert c.capacity.cpus == 4.0
    assert c.capacity.memory > 0  # not in the file: still the default ("" = the machine's)
    assert c.containers.halt_grace == 60.0 and c.containers.allow_network is True
    assert c.containers.user == "65534:65534"  # untouched keys of the same section stay
    assert c.containers.pids_limit == 4096
    assert c.store.results_bucket == "dlaas-results"


def test_frameworks_merge_per_framework_name(write):
    c = load(write("frameworks:\n  python:\n    '3.12': me/python:3.12\n  jax:\n    '*': me/jax\n"))
    assert c.frameworks["python"] == {"3.12": "me/python:3.12"}  # replaced as a whole
    assert c.frameworks["jax"] == {"*": "me/jax"}
    assert c.frameworks["pytorch"] == {"*": "dlaas/pytorch:bookworm"}  # kept


def test_empty_user_file_is_the_defaults(write, tmp_path):
    c = load(write("", paths=False), env={"DLAAS_STATE_DIR": str(tmp_path), "DLAAS_SOCKET": "/s"})
    assert c.log_level == "info"


def test_env_and_overrides_win_over_the_file(write, tmp_path):
    path = write("log_level: debug\n")
    c = load(path, env={"DLAAS_LOG_LEVEL": "warning", "DLAAS_STATE_DIR": str(tmp_path / "e")})
    assert c.log_level == "warning" and c.state_dir == str(tmp_path / "e")
    c = load(path, env={"DLAAS_LOG_LEVEL": "warning"}, overrides={"log_level": "error"})
    assert c.log_level == "error"
    c = load(path, overrides={"log_level": None})  # None: the flag was not given
    assert c.log_level == "debug"


def test_dlaas_config_env_names_the_file(write):
    path = write("log_level: error\n")
    assert config.load(None, env={"DLAAS_CONFIG": str(path)}).log_level == "error"


def test_explicit_missing_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.yaml")


def test_credentials_file(write, tmp_path):
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"access_key": "AK", "secret_key": "SK"}))
    c = load(write(f"store:\n  endpoint: http://127.0.0.1:9000\n  credentials_file: {creds}\n"))
    assert (c.store.access_key, c.store.secret_key) == ("AK", "SK")
    assert not c.store.bundled


# --- refusals ---------------------------------------------------------------------------


def test_unknown_key_with_did_you_mean_and_line(write):
    (p,) = problems(write("log_levle: debug\n"))
    assert p.path == "log_levle"
    assert "did you mean 'log_level'" in p.message
    assert p.line == 4  # after the three path lines


def test_unknown_nested_key(write):
    (p,) = problems(write("containers:\n  halt_gracee: 5s\n"))
    assert p.path == "containers.halt_gracee" and p.line == 5
    assert "did you mean 'halt_grace'" in p.message


def test_internal_source_field_is_not_a_config_key(write):
    # Config.source (where the config came from) is set by load, never read from a file
    (p,) = problems(write("source: me\n"))
    assert p.path == "source" and "unknown key" in p.message
    assert "source," not in p.message.split("allowed here:")[1]


@pytest.mark.parametrize(
    "text, path, word",
    [
        ("containers:\n  halt_grace: soon\n", "containers.halt_grace", "duration"),
        ("capacity:\n  cpus: -1\n", "capacity.cpus", "0 or more"),
        ("capacity:\n  memory: 12\n", "capacity.memory", "add a unit"),
        ("capacity: 3\n", "capacity", "mapping"),
        ("containers:\n  user: root\n", "containers.user", "uid:gid"),
        ("containers:\n  user: '1000'\n", "containers.user", "uid:gid"),
        ("containers:\n  pids_limit: 0\n", "containers.pids_limit", "1 or more"),
        ("containers:\n  allowed_volumes: /data\n", "containers.allowed_volumes", "a list"),
        ("log_level: verbose\n", "log_level", "debug, info, warning, error"),
        ("store:\n  results_bucket: My_Results\n", "store.results_bucket", "'my-results'"),
        ("store:\n  transfer_workers: 0\n", "store.transfer_workers", "1 or more"),
        ("cache:\n  max_size: lots\n", "cache.max_size", "size"),
        ("results:\n  keep_local: maybe\n", "results.keep_local", "true or false"),
    ],
)
def test_bad_values_are_refused_with_their_line(write, text, path, word):
    (p,) = [p for p in problems(write(text)) if p.path == path]
    assert word in p.message
    assert p.line is not None and p.line >= 4


def test_every_problem_at_once(write):
    ps = problems(write("log_level: loud\ncapacity:\n  cpus: -1\ncontainers:\n  user: root\n"))
    assert [p.path for p in ps] == ["log_level", "capacity.cpus", "containers.user"]
    assert [p.line for p in ps] == [4, 6, 8]


def test_top_level_list_is_refused(write):
    (p,) = problems(write("- a\n", paths=False))
    assert "mapping" in p.message and p.line == 1


def test_external_store_without_keys_is_refused(write):
    (p,) = problems(write("store:\n  endpoint: http://127.0.0.1:9000\n"))
    assert p.path == "store.access_key"
    assert "secret_key" in p.message and "credentials_file" in p.message


def test_external_store_needs_a_url(write):
    ps = problems(write("store:\n  endpoint: s3.example.org\n  access_key: a\n  secret_key: b\n"))
    assert [p.path for p in ps] == ["store.endpoint"]
    assert "http://" in ps[0].message


def test_framework_without_versions_is_refused(write):
    (p,) = problems(write("frameworks:\n  python: {}\n"))
    assert p.path == "frameworks.python" and "no version" in p.message


def test_missing_socket_group_is_refused(write):
    (p,) = problems(write("socket_group: no-such-group-dlaas-test\n"))
    assert p.path == "socket_group" and "does not exist" in p.message


def test_check_problems_have_lines(write):
    (p,) = problems(write("store:\n  endpoint: s3.example.org\n  access_key: a\n  secret_key: b\n"))
    assert p.line == 5


@pytest.mark.parametrize(
    "text",
    ["log_level: [\n", "log_level: info\nlog_level: debug\n"],
    ids=["syntax-error", "duplicate-key"],
)
def test_yaml_errors_in_the_user_file_are_config_errors(write, text):
    with pytest.raises(ConfigError):
        load(write(text))


@pytest.mark.parametrize("content", [None, "not json", '{"access_key": "a"}'])
def test_bad_credentials_file_is_a_config_error(write, tmp_path, content):
    creds = tmp_path / "creds.json"
    if content is not None:
        creds.write_text(content)
    with pytest.raises(ConfigError):
        load(write(f"store:\n  endpoint: http://127.0.0.1:9000\n  credentials_file: {creds}\n"))


# --- printable ----------------------------------------------------------------------------


def test_printable_masks_secrets(write):
    c = load(
        write(
            "store:\n  endpoint: http://127.0.0.1:9000\n  access_key: AKIA123\n"
            "  secret_key: s3cr3t\n"
        )
    )
    out = config.printable(c)
    assert out["store"]["access_key"] == "********"
    assert out["store"]["secret_key"] == "********"
    assert "s3cr3t" not in json.dumps(out) and "AKIA123" not in json.dumps(out)
    assert c.store.secret_key == "s3cr3t"  # the config itself is untouched
    assert out["store"]["endpoint"] == "http://127.0.0.1:9000"
    assert out["source"] == str(c.source)


def test_printable_leaves_empty_keys_empty(write):
    out = config.printable(load(write()))
    assert out["store"]["access_key"] == "" and out["store"]["secret_key"] == ""
    assert out["containers"]["halt_grace"] == 10.0
    json.dumps(out)  # plain data


# --- the executor -----------------------------------------------------------------------


def test_the_executor_is_local_by_default_and_names_come_from_the_package(write):
    from dlaasd import executors

    assert load(write()).executor == "local"
    assert "local" in executors.names()


def test_an_unknown_executor_is_refused_with_the_accepted_names(write):
    (p,) = problems(write("executor: nomad\n"))
    assert p.path == "executor" and "one of: kubernetes, local, slurm" in p.message
    assert p.line == 4


def test_the_kubernetes_executor_needs_a_kubeconfig_and_kubernetes_names(write, tmp_path):
    (p,) = problems(write("executor: kubernetes\nkubernetes:\n  kubeconfig: /nowhere/kube\n"))
    assert p.path == "kubernetes.kubeconfig" and "/nowhere/kube is not a file" in p.message
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    found = problems(
        write(
            f"executor: kubernetes\nkubernetes:\n  kubeconfig: {kubeconfig}\n"
            "  namespace: Research_Team\n  store_endpoint: minio:9000\n"
        )
    )
    assert {p.path for p in found} == {"kubernetes.namespace", "kubernetes.store_endpoint"}
    assert all(p.line for p in found)
    # the empty default means in the cluster: outside one, that is refused, with the fix
    (p,) = problems(write("executor: kubernetes\n"))
    assert p.path == "kubernetes.kubeconfig" and "does not run in a cluster" in p.message
    config = load(write(f"executor: kubernetes\nkubernetes:\n  kubeconfig: {kubeconfig}\n"))
    assert config.executor == "kubernetes" and config.kubernetes.namespace == "dlaas"
