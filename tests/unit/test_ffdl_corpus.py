"""FfDL's example manifests (our copies of their shapes) through the real validation and
admission: each accepted, or refused only for a reason of this machine, named."""

from __future__ import annotations

import pytest

from dlaasd import admission, config, manifest
from tests.ffdl_corpus import CORPUS, EXPECTED, said

FILES = sorted(p.name for p in CORPUS.glob("*.yml"))


def make(tmp_path, text: str) -> config.Config:
    path = tmp_path / "dlaasd.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\nsocket: {tmp_path / 's.sock'}\n"
        f"drop_dir: {tmp_path / 'inbox'}\nsocket_group: ''\n" + text
    )
    return config.load(path, env={})


SMALL = "capacity:\n  cpus: 2\n  memory: 4GiB\n"
BIG = "capacity:\n  cpus: 32\n  memory: 64GiB\ncontainers:\n  allowed_volumes: [/cosdata]\n"
FOUR_GPUS = ["NVIDIA H100 80GB HBM3"] * 4


def test_the_table_covers_the_corpus():
    assert sorted(EXPECTED) == FILES and len(FILES) >= 23


@pytest.mark.parametrize("name", FILES)
def test_parsed_unchanged_and_admitted_where_the_machine_has_what_it_asks(name, tmp_path):
    image, _, pieces = EXPECTED[name]
    m = manifest.parse((CORPUS / name).read_bytes(), name)
    admitted = admission.admit(m, make(tmp_path, BIG), FOUR_GPUS)
    assert admitted.image == image
    for piece in pieces:
        assert said(piece, admitted.warnings), (piece, admitted.warnings)
    assert len(admitted.warnings) == len(set(admitted.warnings))


@pytest.mark.parametrize("name", FILES)
def test_on_the_test_machine_refused_only_for_what_it_lacks(name, tmp_path):
    _, outcome, _ = EXPECTED[name]
    m = manifest.parse((CORPUS / name).read_bytes(), name)
    small = make(tmp_path, SMALL)
    if outcome in ("accepted", "S103"):  # S103: the image, checked by the daemon
        admission.admit(m, small, [])
        return
    code, fields = outcome
    with pytest.raises(admission.AdmissionError) as info:
        admission.admit(m, small, [])
    assert info.value.code == code
    assert tuple(p.path for p in info.value.problems) == fields
    if code == "C104":
        assert all("asked for" in p.message for p in info.value.problems)
    else:
        assert "allowed_volumes" in info.value.problems[0].message


def test_bucket_names_in_the_store_are_all_valid():
    for name in FILES:
        m = manifest.parse((CORPUS / name).read_bytes(), name)
        for b in m.buckets():
            assert manifest.bucket_problem(b["store"]) is None, (name, b)
