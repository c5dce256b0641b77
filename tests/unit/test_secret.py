"""Secrets found by place and by name, replaced in the text as written."""

from __future__ import annotations

import os
import stat

import yaml

from dlaasd import manifest
from dlaasd.secret import PLACEHOLDER, Secrets, Vault, redact, secrets_of

PATTERNS = ["*PASSWORD*", "*SECRET*", "*TOKEN*", "*_KEY"]

TEXT = """\
# my run (the key is hunter2-secret-key)
name: run
framework:
  name: python
  command: python train.py   # uses $API_KEY
data_stores:
  - id: s3
    type: s3_datastore
    training_data: {container: data}
    connection:
      auth_url: http://127.0.0.1:9000
      user_name: alice
      password: hunter2-secret-key
env:
  API_KEY: "k-123456"
  hf_token: |
    tok-abcdef
  LR: 0.1
  KEYBOARD: qwerty
"""


def test_secrets_are_replaced_and_the_rest_kept_as_written():
    out = redact(TEXT, PATTERNS)
    for value in ("hunter2-secret-key", "k-123456", "tok-abcdef"):
        assert value not in out
    assert "# my run (the key is ********)" in out  # a comment repeating it too
    assert "command: python train.py   # uses $API_KEY" in out  # the rest as written
    m = manifest.parse(out)
    assert m.data_stores[0].connection.password == PLACEHOLDER
    assert m.env == {
        "API_KEY": PLACEHOLDER,
        "hf_token": PLACEHOLDER,
        "LR": "0.1",
        "KEYBOARD": "qwerty",
    }


def test_values_go_back_where_a_run_needs_them():
    original = manifest.parse(TEXT)
    secrets = secrets_of(original, PATTERNS)
    assert secrets.passwords == {0: "hunter2-secret-key"}
    assert secrets.env == {"API_KEY": "k-123456", "hf_token": "tok-abcdef\n"}
    restored = secrets.apply(manifest.parse(redact(TEXT, PATTERNS)))
    assert restored == original
    assert Secrets.from_json(secrets.to_json()) == secrets


def test_nothing_secret_leaves_the_text_alone():
    text = "name: x\nframework: {name: python, command: c}\nenv: {LR: 1}\n"
    assert redact(text, PATTERNS) == text
    assert not secrets_of(manifest.parse(text), PATTERNS)
    # an example's stand-ins are not secrets (and say the connection is not used)
    text = (
        "name: x\nframework: {name: python, command: c}\nenv: {HF_TOKEN: ''}\n"
        "data_stores:\n- id: s\n  type: s3_datastore\n"
        "  connection: {auth_url: 'http://s3.example.org', password: <S3 secret key>}\n"
    )
    assert redact(text, PATTERNS) == text
    assert not secrets_of(manifest.parse(text), PATTERNS)


def test_a_manifest_inside_an_experiment_file():
    spec = "name: sweep\nmanifest:\n  name: x\n  env:\n    MY_SECRET: s3cr3t-value  # here\n"
    out = redact(spec, PATTERNS, at=("manifest",))
    assert "s3cr3t-value" not in out and "# here" in out
    assert yaml.safe_load(out)["manifest"]["env"]["MY_SECRET"] == PLACEHOLDER


def test_anchors_and_odd_layouts_still_come_out_without_the_secret():
    text = (
        "name: x\nframework: {name: python, command: c}\n"
        "env: {DB_PASSWORD: &pw 'p4ss-word', OTHER_TOKEN: *pw}\n"
    )
    out = redact(text, PATTERNS)
    assert "p4ss-word" not in out
    assert manifest.parse(out).env == {"DB_PASSWORD": PLACEHOLDER, "OTHER_TOKEN": PLACEHOLDER}


def test_a_value_that_also_means_something_else_is_only_replaced_where_secret():
    text = "name: x\nframework: {name: python, command: c}\nnetwork: true\nenv: {A_KEY: 'true'}\n"
    out = redact(text, PATTERNS)
    assert "network: true" in out and manifest.parse(out).env["A_KEY"] == PLACEHOLDER


def test_the_vault_is_private(tmp_path):
    vault = Vault(tmp_path / "secrets")
    vault.put("training-abc", Secrets({0: "pw"}, {"T": "v"}))
    vault.put("training-none", Secrets())  # nothing to keep: no file
    assert vault.run_ids() == {"training-abc"}
    assert stat.S_IMODE(os.stat(tmp_path / "secrets").st_mode) == 0o700
    assert stat.S_IMODE(vault.path("training-abc").stat().st_mode) == 0o600
    assert vault.get("training-abc") == Secrets({0: "pw"}, {"T": "v"})
    assert vault.get("training-none") == Secrets()
    vault.remove("training-abc")
    assert vault.run_ids() == set()
