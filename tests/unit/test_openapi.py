"""The OpenAPI document built from the route table: complete, and its schemas real."""

from __future__ import annotations

import json
import re

import jsonschema_rs
import pytest

from dlaasd.api import ENDPOINTS, error_body
from dlaasd.codes import Code
from dlaasd.errors import Invalid, NotFound
from dlaasd.openapi import ERRORS, SCHEMAS, document
from dlaasd.schema import Problem

DOC = document(ENDPOINTS)


def validate(instance, name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": SCHEMAS}}
    jsonschema_rs.validator_for(schema).validate(instance)


def test_every_reference_resolves():
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(DOC)))
    assert refs and refs <= set(SCHEMAS)


def test_every_operation_declares_its_success_and_its_errors_as_json():
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            statuses = sorted(op["responses"])
            assert [s for s in statuses if s.startswith("2")], (method, path)
            for s in statuses:
                if not s.startswith("2"):
                    assert int(s) in ERRORS
                    content = op["responses"][s]["content"]["application/json"]
                    assert content["schema"] == {"$ref": "#/components/schemas/Error"}
            success = op["responses"][statuses[0]]["content"]
            if "application/json" in success:  # a JSON success has a real schema
                assert success["application/json"]["schema"]["$ref"].split("/")[-1] in SCHEMAS


def test_uploads_and_submissions_declare_201():
    assert "201" in DOC["paths"]["/v1/data/{bucket}/{key}"]["put"]["responses"]
    assert "200" not in DOC["paths"]["/v1/data/{bucket}/{key}"]["put"]["responses"]
    assert "201" in DOC["paths"]["/v1/runs"]["post"]["responses"]
    assert "201" in DOC["paths"]["/v1/experiments"]["post"]["responses"]


def test_error_bodies_fit_the_error_schema():
    validate(error_body(NotFound("no run 'x'")), "Error")
    invalid = Invalid(
        "the manifest has problems", Code.BAD_MANIFEST, [Problem("gpus", "a number", 3)]
    )
    validate(error_body(invalid), "Error")
    with pytest.raises(jsonschema_rs.ValidationError):
        validate({"error": {"code": "C101"}}, "Error")  # no message


def test_query_parameters_are_typed():
    params = {p["name"]: p for p in DOC["paths"]["/v1/runs"]["get"]["parameters"]}
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 10_000}
    logs = {p["name"]: p for p in DOC["paths"]["/v1/runs/{id}/logs"]["get"]["parameters"]}
    assert logs["follow"]["schema"]["enum"] == ["1", "true", "0", "false"]
