"""dlaasd.manifest: the FfDL v1 manifest.yml, and every way to get it wrong."""

from __future__ import annotations

import textwrap

import pytest

from dlaasd import manifest
from dlaasd.manifest import ManifestError

# The shape of FfDL's tensorflow example (etc/examples/tf-model/manifest.yml), its bucket
# names too (S3 refuses them; the store gets tf-training-data: README, bucket names).
GOOD = """\
name: tf_convolutional_network_tutorial
description: Convolutional network model using tensorflow
version: 1.0
gpus: 0
cpus: 0.5
memory: 1Gb
learners: 1

# Object stores that allow the system to retrieve training data.
data_stores:
  - id: sl-internal-os
    type: mount_cos
    training_data:
      container: tf_training_data
    training_results:
      container: tf_trained_model
    connection:
      auth_url: http://s3.default.svc.cluster.local
      user_name: test
      password: test

framework:
  name: tensorflow
  version: "1.5.0-py3"
  command: python3 convolutional_network.py --trainImagesFile ${DATA_DIR}/train.gz

evaluation_metrics:
  type: tensorboard
  in: "$JOB_STATE_DIR/logs/tb"
"""

# Four lines that make a valid manifest; each bad case adds to it from line 5 on.
H = "name: run\nframework:\n  name: python\n  command: python train.py\n"


def problems_of(text: str) -> list:
    with pytest.raises(ManifestError) as info:
        manifest.parse(text)
    assert info.value.code == "C101"
    assert info.value.problems
    return info.value.problems


# --- a good manifest ----------------------------------------------------------------


def test_good_ffdl_manifest_reads_every_field():
    m = manifest.parse(GOOD)
    assert m.name == "tf_convolutional_network_tutorial"
    assert m.description == "Convolutional network model using tensorflow"
    assert m.version == "1.0"  # YAML float 1.0 becomes the text "1.0"
    assert m.gpus == 0 and m.total_gpus == 0
    assert m.cpus == 0.5
    assert m.memory == 1000**3  # "1Gb" is gigabytes
    assert m.learners == 1
    assert m.gpu_type == ""
    assert len(m.data_stores) == 1
    ds = m.data_store
    assert ds is m.data_stores[0]
    assert ds.id == "sl-internal-os"
    assert ds.type == "mount_cos"
    assert ds.training_data.container == "tf_training_data"  # as written
    assert ds.training_data.bucket == "tf-training-data"  # in the store
    assert ds.training_data.prefix == ""
    assert ds.training_results.container == "tf_trained_model"
    assert ds.training_results.bucket == "tf-trained-model"
    assert ds.connection.auth_url == "http://s3.default.svc.cluster.local"
    assert ds.connection.user_name == "test"
    assert ds.connection.password == "test"
    assert m.framework.name == "tensorflow"
    assert m.framework.version == "1.5.0-py3"
    assert m.framework.command.startswith("python3 convolutional_network.py")
    assert "${DATA_DIR}" in m.framework.command
    assert m.framework.image_tag == "" and m.framework.image == ""
    assert m.evaluation_metrics.type == "tensorboard"
    assert m.evaluation_metrics.in_ == "$JOB_STATE_DIR/logs/tb"
    assert m.timeout is None and m.env == {} and m.network is False


def test_verbatim_ffdl_example_is_accepted_and_says_what_it_maps():
    m = manifest.parse(GOOD)
    assert m.buckets() == [
        {"use": "training data", "manifest": "tf_training_data", "store": "tf-training-data"},
        {"use": "results", "manifest": "tf_trained_model", "store": "tf-trained-model"},
    ]
    notes = m.notes
    assert len(notes) == 3, notes
    assert "'tf_training_data' is stored as 'tf-training-data'" in notes[0]
    assert "'tf_trained_model' is stored as 'tf-trained-model'" in notes[1]
    assert "in-cluster" in notes[2] and "this dlaasd's store" in notes[2]
    assert m.data_store.remote is None  # FfDL's cluster store means the one here


def test_valid_names_and_a_real_endpoint_say_nothing():
    text = GOOD.replace("tf_training_data", "tf-training-data").replace(
        "tf_trained_model", "tf-trained-model"
    )
    text = text.replace("http://s3.default.svc.cluster.local", "http://127.0.0.1:9000")
    m = manifest.parse(text)
    assert m.notes == []
    assert m.data_store.remote.auth_url == "http://127.0.0.1:9000"


def test_parse_does_not_change_with_the_notes():
    """Notes are derived from the text: parsing a stored manifest again gives the same."""
    assert manifest.parse(GOOD).notes == manifest.parse(GOOD).notes


def test_minimal_manifest_defaults():
    m = manifest.parse(H)
    assert m.version == "1.0"
    assert (m.gpus, m.cpus, m.memory, m.learners) == (0, 1.0, 1024**3, 1)
    assert m.data_stores == [] and m.data_store is None
    assert m.evaluation_metrics is None


def test_bytes_are_accepted():
    assert manifest.parse(H.encode()).name == "run"


def test_extensions_are_read():
    m = manifest.parse(
        H
        + textwrap.dedent(
            """\
            gpus: 2
            learners: 3
            gpu_type: nvidia-TeslaV100
            timeout: 1h30m
            network: true
            env:
              EPOCHS: 3
              LR: 0.5
              VERBOSE: true
              NAME: text
            data_stores:
              - id: local
                type: mount_volume
                training_data: {container: mnist, prefix: raw/}
                connection: {path: /data}
            evaluation_metrics:
              type: log
              pattern: 'loss=(?P<loss>[0-9.]+)'
            """
        )
    )
    assert m.total_gpus == 6 and m.gpu_type == "nvidia-TeslaV100"
    assert m.timeout == 5400.0 and m.network is True
    assert m.env == {"EPOCHS": "3", "LR": "0.5", "VERBOSE": "true", "NAME": "text"}
    assert m.data_store.connection.path == "/data"
    assert m.data_store.training_data.prefix == "raw/"
    assert m.evaluation_metrics.pattern == "loss=(?P<loss>[0-9.]+)"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1Gb", 1000**3),
        ("1000MiB", 1000 * 1024**2),
        ("512MB", 512 * 1000**2),
        ("2GiB", 2 * 1024**3),
        ("2Gi", 2 * 1024**3),
        ("1.5GB", 1_500_000_000),
    ],
)
def test_memory_units(value, expected):
    assert manifest.parse(H + f"memory: {value}\n").memory == expected


@pytest.mark.parametrize("value", ['"12"', "12", "abc", "-1GB", "1XB", "12.5", "true"])
def test_memory_refused(value):
    (p,) = problems_of(H + f"memory: {value}\n")
    assert p.path == "memory" and p.line == 5
    assert "512MiB" in p.message  # the allowed forms are shown


def test_memory_without_unit_says_add_a_unit():
    (p,) = problems_of(H + "memory: 12\n")
    assert "add a unit" in p.message


@pytest.mark.parametrize("version, expected", [("1.0", "1.0"), ("1", "1"), ('"1.0"', "1.0")])
def test_version_number_becomes_text(version, expected):
    assert manifest.parse(H + f"version: {version}\n").version == expected


def test_framework_version_number_becomes_text():
    m = manifest.parse("name: a\nframework:\n  name: pytorch\n  version: 2.1\n  command: x\n")
    assert m.framework.version == "2.1"


def test_framework_version_keeps_trailing_zero():
    m = manifest.parse("name: a\nframework:\n  name: pytorch\n  version: 1.10\n  command: x\n")
    assert m.framework.version == "1.10"


# --- bad manifests ------------------------------------------------------------------

# (id, yaml text, field path of one problem, a word its message must contain, its line)
# line None: the YAML has no line for it (an empty document).
BAD = [
    # YAML syntax
    # .line is where the parser stopped; the message also says where the open block began
    ("syntax-indent", "name: a\nframework:\n  name: python\n command: x\n", "", "syntax", 4),
    ("syntax-tab", "name: a\n\tframework: x\n", "", "syntax", 2),
    ("syntax-unclosed", "name: a\nframework: [1, 2\ngpus: 1\n", "", "starts at line 2", 3),
    (
        "syntax-line-in-text",
        "name: a\nframework:\n  name: python\n command: x\n",
        "",
        "at line 4, column 2",
        4,
    ),
    # the top level
    ("top-list", "- name: a\n- framework: x\n", "", "mapping", 1),
    ("top-scalar", "just some text\n", "", "mapping", 1),
    ("top-number", "42\n", "", "mapping", 1),
    ("empty", "", "name", "missing", None),
    ("only-comment", "# nothing here\n", "framework", "missing", None),
    # missing fields
    ("missing-name", "framework: {name: python, command: x}\n", "name", "missing", 1),
    ("null-name", "name:\nframework: {name: python, command: x}\n", "name", "missing", 1),
    ("empty-name", "name: ''\nframework: {name: python, command: x}\n", "name", "empty", 1),
    ("missing-framework", "name: a\ngpus: 1\n", "framework", "missing", 1),
    ("missing-command", "name: a\nframework:\n  name: python\n", "framework.command", "missing", 2),
    ("missing-fw-name", "name: a\nframework:\n  command: x\n", "framework.name", "missing", 2),
    (
        "blank-command",
        "name: a\nframework: {name: python, command: ' '}\n",
        "framework.command",
        "empty",
        2,
    ),
    ("framework-text", "name: a\nframework: python\n", "framework", "mapping", 2),
    # misspelt keys
    (
        "typo-framwork",
        "name: a\nframwork:\n  name: python\n  command: x\n",
        "framwork",
        "did you mean 'framework'",
        2,
    ),
    ("typo-gpu", H + "gpu: 1\n", "gpu", "did you mean 'gpus'", 5),
    ("typo-learner", H + "learner: 2\n", "learner", "did you mean 'learners'", 5),
    (
        "typo-comand",
        "name: a\nframework:\n  name: python\n  comand: x\n",
        "framework.comand",
        "did you mean 'command'",
        4,
    ),
    (
        "typo-trainig-data",
        H + "data_stores:\n  - id: s\n    type: mount_cos\n    trainig_data:\n"
        "      container: abc\n",
        "data_stores[0].trainig_data",
        "did you mean 'training_data'",
        8,
    ),
    (
        "typo-auth-ur",
        H + "data_stores:\n  - id: s\n    type: s3_datastore\n    connection:\n"
        "      auth_ur: http://x\n",
        "data_stores[0].connection.auth_ur",
        "did you mean 'auth_url'",
        9,
    ),
    (
        "typo-metrics-in",
        H + "evaluation_metrics:\n  type: tensorboard\n  inn: logs\n",
        "evaluation_metrics.inn",
        "did you mean 'in'",
        7,
    ),
    ("unknown-key", H + "colour: blue\n", "colour", "unknown key", 5),
    ("non-scalar-key", H + "[a, b]: 1\n", "", "plain words", 5),
    # wrong types and ranges
    ("gpus-text", H + "gpus: two\n", "gpus", "whole number", 5),
    ("gpus-negative", H + "gpus: -1\n", "gpus", "0 or more", 5),
    ("gpus-fraction", H + "gpus: 1.5\n", "gpus", "whole number", 5),
    ("gpus-bool", H + "gpus: true\n", "gpus", "whole number", 5),
    ("cpus-list", H + "cpus: [1]\n", "cpus", "a list", 5),
    ("cpus-zero", H + "cpus: 0\n", "cpus", "more than 0", 5),
    ("cpus-text", H + "cpus: many\n", "cpus", "a number", 5),
    ("learners-zero", H + "learners: 0\n", "learners", "1 or more", 5),
    ("learners-bool", H + "learners: true\n", "learners", "whole number", 5),
    ("gpu-type-list", H + "gpu_type: [a]\n", "gpu_type", "text", 5),
    ("description-map", H + "description: {a: 1}\n", "description", "text", 5),
    # memory
    ("memory-no-unit", H + "memory: 12\n", "memory", "unit", 5),
    ("memory-text-no-unit", H + "memory: '12'\n", "memory", "unit", 5),
    ("memory-abc", H + "memory: abc\n", "memory", "size", 5),
    ("memory-negative", H + "memory: -1GB\n", "memory", "size", 5),
    ("memory-bad-unit", H + "memory: 1XB\n", "memory", "size", 5),
    ("memory-tiny", H + "memory: 1MB\n", "memory", "16MiB", 5),
    # timeout
    ("timeout-5x", H + "timeout: 5x\n", "timeout", "duration", 5),
    ("timeout-zero", H + "timeout: 0\n", "timeout", "more than zero", 5),
    ("timeout-negative", H + "timeout: -3\n", "timeout", "more than zero", 5),
    # env
    ("env-reserved", H + "env:\n  MODEL_DIR: /tmp\n", "env.MODEL_DIR", "cannot be overridden", 6),
    (
        "env-reserved-cuda",
        H + "env:\n  CUDA_VISIBLE_DEVICES: '0'\n",
        "env.CUDA_VISIBLE_DEVICES",
        "set by dlaasd",
        6,
    ),
    ("env-bad-name", H + "env:\n  1ABC: x\n", "env.1ABC", "variable name", 6),
    ("env-dash-name", H + "env:\n  MY-VAR: x\n", "env.MY-VAR", "variable name", 6),
    ("env-list-value", H + "env:\n  A: [1, 2]\n", "env.A", "text, a number", 6),
    ("env-null-value", H + "env:\n  A:\n", "env.A", "nothing", 6),
    ("env-not-mapping", H + "env: [A=1]\n", "env", "mapping", 5),
    # data stores
    ("stores-not-list", H + "data_stores:\n  id: s\n", "data_stores", "a list", 5),
    ("store-no-id", H + "data_stores:\n  - type: mount_cos\n", "data_stores[0].id", "missing", 6),
    ("store-no-type", H + "data_stores:\n  - id: s\n", "data_stores[0].type", "missing", 6),
    (
        "store-type",
        H + "data_stores:\n  - id: s\n    type: mount_coss\n",
        "data_stores[0].type",
        "did you mean 'mount_cos'",
        7,
    ),
    (
        "store-type-s3",
        H + "data_stores:\n  - id: s\n    type: s3\n",
        "data_stores[0].type",
        "s3_datastore",
        7,
    ),
    (
        "bucket-collision",
        H + "data_stores:\n  - id: s\n    type: mount_cos\n    training_data:\n"
        "      container: tf_data\n    training_results:\n      container: tf-data\n",
        "data_stores[0].training_results.container",
        "'tf-data' and 'tf_data' (data_stores[0].training_data.container) are both stored",
        11,
    ),
    (
        "bucket-collision-case",
        H + "data_stores:\n  - id: s\n    type: mount_cos\n    training_data:\n"
        "      container: MyData\n    training_results:\n      container: mydata\n",
        "data_stores[0].training_results.container",
        "bucket 'mydata'",
        11,
    ),
    (
        "bucket-collision-stores",
        H + "data_stores:\n  - id: a\n    type: mount_cos\n    training_data:\n"
        "      container: Results_2024\n  - id: b\n    type: mount_cos\n"
        "    training_results:\n      container: results-2024\n",
        "data_stores[1].training_results.container",
        "'Results_2024'",
        13,
    ),
    (
        "bucket-empty",
        H + "data_stores:\n  - id: s\n    type: mount_cos\n    training_data:\n"
        "      container: ''\n",
        "data_stores[0].training_data.container",
        "a bucket name",
        9,
    ),
    (
        "bucket-list",
        H + "data_stores:\n  - id: s\n    type: mount_cos\n    training_data:\n"
        "      container: [a]\n",
        "data_stores[0].training_data.container",
        "a bucket name",
        9,
    ),
    (
        "bucket-missing",
        H + "data_stores:\n  - id: s\n    type: mount_cos\n    training_data: {}\n",
        "data_stores[0].training_data.container",
        "missing",
        8,
    ),
    (
        "auth-url",
        H + "data_stores:\n  - id: s\n    type: s3_datastore\n    connection:\n"
        "      auth_url: s3.example.org\n",
        "data_stores[0].connection.auth_url",
        "http",
        9,
    ),
    (
        "auth-url-ftp",
        H + "data_stores:\n  - id: s\n    type: mount_cos\n    connection:\n"
        "      auth_url: ftp://s3.example.org\n",
        "data_stores[0].connection.auth_url",
        "https://",
        9,
    ),
    (
        "volume-no-path",
        H + "data_stores:\n  - id: s\n    type: mount_volume\n",
        "data_stores[0].connection.path",
        "host folder",
        6,
    ),
    (
        "volume-no-path-conn",
        H + "data_stores:\n  - id: s\n    type: mount_volume\n    connection: {user_name: u}\n",
        "data_stores[0].connection.path",
        "host folder",
        8,
    ),
    # evaluation metrics
    (
        "metrics-type",
        H + "evaluation_metrics:\n  type: tensorbord\n",
        "evaluation_metrics.type",
        "did you mean 'tensorboard'",
        6,
    ),
    (
        "log-no-pattern",
        H + "evaluation_metrics:\n  type: log\n",
        "evaluation_metrics.pattern",
        "regular expression",
        5,
    ),
    (
        "log-bad-regex",
        H + "evaluation_metrics:\n  type: log\n  pattern: 'loss=([0-9'\n",
        "evaluation_metrics.pattern",
        "not a valid regular expression",
        7,
    ),
    (
        "log-no-group",
        H + "evaluation_metrics:\n  type: log\n  pattern: 'loss=([0-9.]+)'\n",
        "evaluation_metrics.pattern",
        "named group",
        7,
    ),
    # duplicates
    (
        "duplicate-top",
        "name: a\nname: b\nframework: {name: python, command: x}\n",
        "name",
        "duplicate",
        2,
    ),
    (
        "duplicate-nested",
        "name: a\nframework:\n  name: python\n  name: pytorch\n  command: x\n",
        "framework.name",
        "duplicate",
        4,
    ),
    # framework
    (
        "custom-no-version",
        "name: a\nframework:\n  name: custom\n  command: x\n",
        "framework.version",
        "custom",
        2,
    ),
    # network
    ("network-text", H + "network: yes please\n", "network", "true or false", 5),
    ("network-number", H + "network: 1\n", "network", "true or false", 5),
]


def _find(problems, path):
    hits = [p for p in problems if p.path == path]
    assert hits, f"no problem at {path!r}; got: " + "; ".join(str(p) for p in problems)
    return hits[0]


@pytest.mark.parametrize("text, path, word", [b[1:4] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_manifest(text, path, word):
    p = _find(problems_of(text), path)
    assert word in p.message, str(p)


@pytest.mark.parametrize(
    "text, path, line",
    [pytest.param(b[1], b[2], b[4], id=b[0]) for b in BAD],
)
def test_bad_manifest_line(text, path, line):
    assert _find(problems_of(text), path).line == line


def test_bad_manifest_table_is_large_and_unique():
    ids = [b[0] for b in BAD]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


def test_syntax_error_message_names_the_line_and_column():
    (p,) = problems_of("name: a\nframework:\n  name: python\n command: x\n")
    assert p.message.startswith("YAML syntax error:")
    assert "line 4, column" in p.message


def test_top_level_list_is_one_problem():
    (p,) = problems_of("- a\n- b\n")
    assert p.message == "found a list; expected a mapping of keys (name, framework, ...)"


def test_empty_document_lists_both_required_fields():
    assert [p.path for p in problems_of("")] == ["name", "framework"]


def test_misspelt_key_also_reports_the_missing_one():
    paths = {p.path for p in problems_of("name: a\nframwork:\n  name: python\n  command: x\n")}
    assert paths == {"framework", "framwork"}


def test_unknown_key_lists_the_allowed_keys():
    p = _find(problems_of(H + "gpu: 1\n"), "gpu")
    assert "allowed here: name, framework, description, version, gpus" in p.message


@pytest.mark.parametrize(
    "name, stored",
    [
        ("My_Training_Data", "my-training-data"),
        ("Results_2024", "results-2024"),
        ("tf_trained_model", "tf-trained-model"),
        ("mnist_pytorch", "mnist-pytorch"),
    ],
)
def test_bucket_names_s3_refuses_are_mapped(name, stored):
    m = manifest.parse(
        H + f"data_stores:\n  - id: s\n    type: mount_cos\n    training_data:\n"
        f"      container: {name}\n"
    )
    assert m.data_store.training_data.container == name
    assert m.data_store.training_data.bucket == stored
    assert [n for n in m.notes if f"is stored as {stored!r}" in n]


def test_same_name_for_data_and_results_is_one_bucket():
    m = manifest.parse(
        H + "data_stores:\n  - id: s\n    type: mount_cos\n    training_data:\n"
        "      container: tf_data\n    training_results:\n      container: tf_data\n"
    )
    assert {b["store"] for b in m.buckets()} == {"tf-data"}


def test_mount_volume_container_is_a_folder_not_mapped():
    m = manifest.parse(
        H + "data_stores:\n  - id: s\n    type: mount_volume\n    training_data:\n"
        "      container: Sub_Folder\n    connection: {path: /data}\n"
    )
    assert m.buckets() == [] and m.notes == []


@pytest.mark.parametrize("name", ["ab", "a..b", "x"])
def test_suggested_bucket_name_is_itself_valid(name):
    problem = manifest.bucket_problem(name)
    assert problem is not None
    suggested = problem.split("use ")[1].strip("'")
    assert manifest.bucket_problem(suggested) is None, problem


def test_numeric_bucket_name_is_accepted():
    m = manifest.parse(
        H + "data_stores:\n  - id: s\n    type: mount_cos\n    training_data:\n"
        "      container: 2024\n"
    )
    assert m.data_store.training_data.container == "2024"


def test_several_problems_listed_at_once_sorted_by_line():
    text = textwrap.dedent(
        """\
        name: a
        framework:
          name: python
          comand: x
        gpus: two
        cpus: 0
        memory: 12
        learners: 0
        netwrk: true
        """
    )
    ps = problems_of(text)
    assert len(ps) >= 3
    assert [p.line for p in ps] == sorted(p.line for p in ps)
    assert {"framework.comand", "gpus", "cpus", "memory", "learners", "netwrk"} <= {
        p.path for p in ps
    }
    assert str(ps[0]).startswith(ps[0].path)


def test_several_cross_check_problems_listed_at_once():
    text = H + "env:\n  MODEL_DIR: x\n  1A: y\nevaluation_metrics:\n  type: log\n  pattern: '('\n"
    ps = problems_of(text)
    assert [p.path for p in ps] == ["env.MODEL_DIR", "env.1A", "evaluation_metrics.pattern"]
    assert [p.line for p in ps] == [6, 7, 10]


def test_schema_and_cross_check_problems_listed_together():
    ps = problems_of(H + "gpus: two\nenv:\n  MODEL_DIR: x\n")
    assert {p.path for p in ps} == {"gpus", "env.MODEL_DIR"}


def test_error_message_names_the_source():
    with pytest.raises(ManifestError) as info:
        manifest.parse(H + "gpus: two\n", source="job/manifest.yml")
    assert str(info.value).startswith("job/manifest.yml has 1 problem(s):")
    assert "gpus (line 5): found 'two' (text); expected a whole number" in str(info.value)


def test_problems_serialise_to_json():
    (p,) = problems_of(H + "gpus: two\n")
    assert p.to_json() == {
        "field": "gpus",
        "line": 5,
        "message": "found 'two' (text); expected a whole number",
    }


def test_custom_framework_with_image_needs_no_version():
    m = manifest.parse("name: a\nframework:\n  name: custom\n  image: me/img:1\n  command: x\n")
    assert m.framework.image == "me/img:1"


@pytest.mark.parametrize("name", sorted(manifest.RESERVED_ENV))
def test_every_reserved_env_name_is_refused(name):
    p = _find(problems_of(H + f"env:\n  {name}: x\n"), f"env.{name}")
    assert "cannot be overridden" in p.message


def test_mount_volume_skips_the_auth_url_check():
    m = manifest.parse(
        H + "data_stores:\n  - id: s\n    type: mount_volume\n    connection:\n"
        "      path: /data\n      auth_url: not-a-url\n"
    )
    assert m.data_store.connection.path == "/data"


# --- FfDL's keys and shapes: accepted, and what is not used is said -----------------


def _store(connection: str, kind: str = "mount_cos") -> str:
    return (
        H + f"data_stores:\n  - id: s\n    type: {kind}\n    training_data:\n"
        f"      container: data-in\n    connection:\n{connection}"
    )


@pytest.mark.parametrize(
    "connection, words",
    [
        (
            "      auth_url: <object storage's endpoint_url>\n"
            "      user_name: <access key id>\n      password: <secret access key>\n",
            "auth_url, user_name and password are empty or a placeholder",
        ),
        ("      auth_url: test\n      user_name: test\n      password: test\n", "auth_url is"),
        (
            "      auth_url: http://127.0.0.1:9000\n      user_name: ''\n      password: ''\n",
            "user_name and password are",
        ),
        (
            "      auth_url: http://127.0.0.1:9000\n      user_name: <S3 access key>\n"
            "      password: secret\n",
            "user_name is",
        ),
        (
            "      auth_url: http://s3.default.svc.cluster.local\n      user_name: test\n",
            "in-cluster",
        ),
        ("      auth_url: http://minio.ffdl.svc:9000\n", "in-cluster"),
        ("      user_name: me\n      password: secret\n", "has no auth_url"),
    ],
)
def test_connection_without_a_usable_endpoint_means_this_dlaasds_store(connection, words):
    m = manifest.parse(_store(connection))
    assert m.data_store.remote is None
    (note,) = m.notes
    assert note.startswith("data_stores[0].connection ") and words in note
    assert "this dlaasd's store" in note


def test_empty_connection_is_quietly_this_dlaasds_store():
    m = manifest.parse(_store("      auth_url: ''\n"))
    assert m.data_store.remote is None and m.notes == []


def test_a_real_endpoint_is_used():
    m = manifest.parse(
        _store("      auth_url: https://s3.example.org\n      user_name: u\n      password: p\n")
    )
    assert m.data_store.remote.auth_url == "https://s3.example.org" and m.notes == []


def test_ffdl_keys_not_used_are_said_one_line_each():
    m = manifest.parse(
        H
        + textwrap.dedent(
            """\
            storage: 10Gb
            data_stores:
              - id: hostmount
                type: mount_volume
                training_data: {container: sub}
                connection: {type: host_mount, name: host-mount, path: /data}
              - id: second
                type: mount_cos
                training_data: {container: other}
                connection: {auth_url: https://x.org, domain_name: d, project_id: p}
            evaluation_metrics:
              type: tensorboard
              image_tag: latest
              line_lookahead: 4
              linelookahead: 4
              eventTypes: [scalars]
              groups: {acc: {regex: 'acc=(?P<acc>[0-9.]+)'}}
            """
        )
    )
    notes = "\n".join(m.notes)
    for key in (
        "storage ('10Gb') is not used",
        "evaluation_metrics.image_tag ('latest') is not used",
        "evaluation_metrics.line_lookahead (4) is not used",
        "evaluation_metrics.linelookahead (4) is not used",
        "evaluation_metrics.eventTypes is not used",
        "evaluation_metrics.groups is not used",
        "data_stores[0].connection.type ('host_mount') is not used",
        "data_stores[0].connection.name ('host-mount') is not used",
        "data_stores[1].connection.domain_name ('d') is not used",
        "data_stores[1].connection.project_id ('p') is not used",
        "data_stores[1] ('second') is not used: only the first data store is",
    ):
        assert key in notes, notes
    assert len(m.notes) == 11  # one line each, nothing else


def test_a_misspelt_connection_key_is_still_refused():
    p = _find(problems_of(_store("      pasword: x\n")), "data_stores[0].connection.pasword")
    assert "did you mean 'password'" in p.message


@pytest.mark.parametrize(
    "ffdl, ours",
    [
        ("optivist", "emetrics"),
        ("emetrics_file", "emetrics"),
        ("file", "emetrics"),
        ("tensorboard_extractor", "tensorboard"),
        ("simple_log_collector", "emetrics"),
        ("null", "emetrics"),
    ],
)
def test_ffdl_metrics_collector_names(ffdl, ours):
    m = manifest.parse(H + f"evaluation_metrics:\n  type: {ffdl}\n  in: $JOB_STATE_DIR/logs\n")
    assert m.evaluation_metrics.type == ours and m.notes == []


def test_regex_extractor_with_a_pattern_reads_the_log():
    m = manifest.parse(
        H + "evaluation_metrics:\n  type: regex_extractor\n  pattern: 'loss=(?P<loss>[0-9.]+)'\n"
    )
    assert m.evaluation_metrics.type == "log" and m.notes == []


def test_regex_extractor_with_groups_only_says_so():
    m = manifest.parse(
        H + "evaluation_metrics:\n  type: regex_extractor\n  groups: {a: {regex: x}}\n"
    )
    assert m.evaluation_metrics.type == "emetrics"
    assert any("regex_extractor" in n for n in m.notes)
    assert any("groups" in n for n in m.notes)


@pytest.mark.parametrize(
    "framework, learners, said",
    [
        ("  name: horovod\n  version: '0.13.10'\n", 2, True),
        ("  name: pytorchmpi\n  version: 0925mpi\n", 2, True),
        ("  name: h2o3\n  version: latest\n", 2, True),
        ("  name: custom\n  version: tomcli/pytorch:0925mpi\n", 2, True),  # an MPI image
        ("  name: custom\n  version: me/x\n", 2, False),
        ("  name: horovod\n  version: '0.13.10'\n", 1, False),  # one learner: nothing to connect
        ("  name: python\n", 2, False),  # independent learners are fine
    ],
)
def test_distributed_learners_are_said(framework, learners, said):
    m = manifest.parse(f"name: a\nlearners: {learners}\nframework:\n{framework}  command: x\n")
    assert any("no network between them" in n for n in m.notes) == said


@pytest.mark.parametrize(
    "command",
    [
        "python -m torch.distributed.launch --nnodes=$NUM_LEARNERS t.py",
        "PS_HOSTS_COUNT=1 ./launcher.py python3 d.py",
        "mpirun -np 2 python t.py",
    ],
)
def test_distributed_commands_are_said(command):
    m = manifest.parse(
        f"name: a\nlearners: 2\nframework:\n  name: custom\n  version: x/y\n  command: {command}\n"
    )
    assert any("MPI, Horovod, torch.distributed" in n for n in m.notes)


@pytest.mark.parametrize(
    "version, gpus, said",
    [
        ("latest-gpu-py3", 0, "names a GPU image, but gpus is 0"),
        ("1.5.0-gpu", 1, None),
        ("cpu", 1, "names a CPU image, but the run asks for 1 GPU"),
        ("c2v0.8.1.cpu.full.ubuntu14.04", 0, None),
        ("1.5.0-py3", 0, None),
    ],
)
def test_gpu_and_cpu_tags_that_do_not_match_the_gpus(version, gpus, said):
    m = manifest.parse(
        f"name: a\ngpus: {gpus}\nframework:\n  name: tensorflow\n  version: {version}\n"
        "  command: x\n"
    )
    said_here = [n for n in m.notes if "image" in n]
    assert len(said_here) == (1 if said else 0)
    if said:
        assert said_here[0].startswith(f"framework.version {version!r} {said}")
