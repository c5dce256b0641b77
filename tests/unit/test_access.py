"""Who sees and changes a run: its owner, root, the admin group; `lab` opens seeing."""

from __future__ import annotations

import grp
import os

import pytest

from dlaasd.access import Caller, public_message
from dlaasd.api import http_status
from dlaasd.codes import Status
from dlaasd.errors import Forbidden
from dlaasd.records import Owned, RunSummary

ALICES = Owned("training-aaaaaaaaa", owner_uid=51001, owner_name="alice")


def test_the_owner_sees_and_changes_others_do_not():
    alice, bob = Caller(51001, 51001), Caller(51002, 51002)
    assert alice.sees(ALICES) and alice.owns(ALICES)
    assert not bob.sees(ALICES) and not bob.owns(ALICES)
    with pytest.raises(Forbidden) as exc:
        bob.check_sees(ALICES, "logs")
    assert http_status(exc.value) == 403
    assert "training-aaaaaaaaa belongs to alice" in exc.value.message
    assert "may see its logs (visibility: queue)" in exc.value.message
    with pytest.raises(Forbidden, match="only its owner or root may halt it"):
        bob.check_may(ALICES, "halt")


def test_lab_visibility_opens_seeing_not_changing():
    bob = Caller(51002, 51002, lab=True)
    assert bob.sees(ALICES) and not bob.owns(ALICES)


def test_root_and_the_admin_group_see_and_change_everything():
    assert Caller(0, 0).owns(ALICES)
    group = grp.getgrgid(os.getegid()).gr_name  # a group the test's own user is in
    admin = Caller(51003, os.getegid(), admin_group=group)
    assert admin.privileged and admin.sees(ALICES) and admin.owns(ALICES)
    carol = Caller(51004, 51004, admin_group=group)
    assert not carol.privileged
    with pytest.raises(Forbidden, match=f"or members of the group '{group}'"):
        carol.check_sees(ALICES, "results")


def test_others_see_what_a_failure_code_means_not_its_words():
    alices = {"id": "training-aaaaaaaaa", "owner_uid": 51001, "owner_name": "alice"}
    failed = RunSummary(
        **alices, status=Status.FAILED, error_code="C201", status_message="exited 1: secret"
    )
    assert public_message(failed) == "failed: the training command exited non-zero"
    queued = RunSummary(
        **alices, status=Status.QUEUED, error_code=None, status_message="waiting for resources"
    )
    assert public_message(queued) == "waiting for resources"
