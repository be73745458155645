"""Every API handler's docstring is its OpenAPI entry: it must be valid YAML with a
summary and responses, or the gateway does not start."""
from __future__ import annotations

import inspect

import pytest
import yaml

from gateway import api, api_admin

HANDLERS = [(f"{m.__name__}.{n}", f) for m in (api, api_admin)
            for n, f in inspect.getmembers(m, inspect.iscoroutinefunction)
            if f.__module__ == m.__name__ and f.__doc__ and not n.startswith("_")]


@pytest.mark.parametrize("name, handler", HANDLERS, ids=[h[0] for h in HANDLERS])
def test_docstring_is_an_openapi_operation(name, handler):
    doc = yaml.safe_load(inspect.cleandoc(handler.__doc__))
    assert isinstance(doc, dict) and doc.get("summary") and doc.get("responses"), name
