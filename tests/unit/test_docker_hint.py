"""What dlaasd says when it cannot use the Docker Engine: not running, or not allowed."""

from __future__ import annotations

import docker
import requests

from dlaasd.executors.local import _docker_hint


def test_refused_user_is_told_about_the_docker_group():
    refused = docker.errors.DockerException(
        "Error while fetching server API version: ('Connection aborted.', "
        "PermissionError(13, 'Permission denied'))"
    )
    hint = _docker_hint(refused)
    assert "refuses this user" in hint and "sudo usermod -aG docker $USER" in hint
    assert "not reachable" not in hint


def test_stopped_engine_is_told_to_start():
    stopped = requests.exceptions.ConnectionError(FileNotFoundError(2, "No such file or directory"))
    hint = _docker_hint(stopped)
    assert "not reachable" in hint and "systemctl start docker" in hint
