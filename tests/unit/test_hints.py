"""What dlaasctl tells someone who cannot reach the daemon: the socket's real mode and
group, and how the daemon was started (so how to start it again)."""

from __future__ import annotations

import json

from dlaasctl.http import denied_advice, start_advice, start_hint
from dlaasd.started import how_started, started_file, systemd_unit, write

CGROUP_V2 = "0::/system.slice/dlaasd.service\n"
CGROUP_V1 = (
    "12:pids:/system.slice/dlaas-gpu.service\n1:name=systemd:/system.slice/dlaas-gpu.service\n"
)


def test_a_systemd_service_is_told_by_its_unit():
    assert systemd_unit(CGROUP_V2) == ("dlaasd.service", False)
    assert systemd_unit(CGROUP_V1) == ("dlaas-gpu.service", False)
    assert systemd_unit("0::/user.slice/user-1000.slice/session-3.scope\n") is None
    info = how_started({"INVOCATION_ID": "abc"}, ["dlaasd"], CGROUP_V1, False)
    assert info == {"how": "systemd", "unit": "dlaas-gpu.service", "user_manager": False}
    advice = start_advice(info)
    assert "sudo systemctl start dlaas-gpu.service" in advice
    assert "journalctl -u dlaas-gpu.service" in advice


def test_a_users_own_service_or_a_shell_in_one_is_told_apart():
    user_unit = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/dlaasd.service\n"
    info = how_started({"INVOCATION_ID": "x"}, ["dlaasd"], user_unit, False)
    assert info == {"how": "systemd", "unit": "dlaasd.service", "user_manager": True}
    assert "`systemctl --user start dlaasd.service`" in start_advice(info)
    # a terminal's shell inherits its terminal service's INVOCATION_ID, but runs in a scope
    shell = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/vte-spawn-1.scope\n"
    assert how_started({"INVOCATION_ID": "x"}, ["dlaasd"], shell, False)["how"] == "foreground"


def test_a_container_is_told_by_its_name():
    info = how_started({}, ["dlaasd"], "0::/\n", True, container_name=lambda host: "dlaasd-lab")
    assert info == {"how": "container", "name": "dlaasd-lab"}
    advice = start_advice(info)
    assert "docker start dlaasd-lab" in advice and "systemctl" not in advice


def test_a_foreground_daemon_is_told_by_its_command(tmp_path):
    argv = ["/x/dlaasd/main.py", "--state-dir", "/tmp/my state", "--socket", "/tmp/s.sock"]
    info = how_started({}, argv, "0::/user.slice\n", False)
    assert info["how"] == "foreground"
    assert info["command"] == "dlaasd --state-dir '/tmp/my state' --socket /tmp/s.sock"
    sock = tmp_path / "dlaasd.sock"
    write(sock, info)
    assert json.loads(started_file(sock).read_text()) == info
    hint = start_hint(sock)
    assert "start it again with `dlaasd --state-dir '/tmp/my state' --socket /tmp/s.sock`" in hint
    assert "systemctl" not in hint


def test_no_record_gives_both_ways(tmp_path):
    hint = start_hint(tmp_path / "none.sock")
    assert "`dlaasd`" in hint and "systemctl start dlaasd" in hint


def test_a_socket_only_its_owner_may_use_is_not_a_group_matter():
    text = denied_advice("/run/dlaas/dlaasd.sock", 0o600, "root", "root", "bob", False, False)
    assert "mode 0600, owner root, group root" in text
    assert "only root may use it" in text and "socket_group" in text
    assert "add you" not in text


def test_a_group_socket_names_the_group_and_the_command():
    text = denied_advice("/run/dlaas/dlaasd.sock", 0o660, "root", "dlaas", "carol", False, False)
    assert "mode 0660, owner root, group dlaas" in text
    assert "sudo usermod -aG dlaas carol" in text


def test_a_member_whose_login_predates_it_is_told_to_log_in_again():
    text = denied_advice("/run/dlaas/dlaasd.sock", 0o660, "root", "dlaas", "carol", True, False)
    assert "you are in the group 'dlaas', but this login is not yet" in text
    assert "newgrp dlaas" in text
