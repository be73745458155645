"""The LMTP listener's recipient → (queue, action) rule, one address at a time."""
from __future__ import annotations

import pytest

from services.ingest.lmtp import Route, route


@pytest.mark.parametrize("address, expected", [
    ("general@csirt.example", Route("general", "correspond")),
    ("general+comment@csirt.example", Route("general", "comment")),
    ("general-comment@csirt.example", Route("general", "comment")),
    ("general+Comment@csirt.example", Route("general", "comment")),
    ("general+correspond@csirt.example", Route("general", "correspond")),
    ("abuse-de@csirt.example", Route("abuse-de", "correspond")),        # a dash inside a name stays
    ("abuse-de-comment@csirt.example", Route("abuse-de", "comment")),
    ("Abuse@csirt.example", Route("Abuse", "correspond")),              # exactly as written
    ("general+tag@csirt.example", Route("general+tag", "correspond")),  # unknown suffix: part of the name
    ("comment@csirt.example", Route("comment", "correspond")),          # a queue may be called comment
    ('"odd name"@csirt.example', Route("odd name", "correspond")),
    ("user@host@csirt.example", Route("user@host", "correspond")),      # the last @ separates the domain
    ("general", Route("general", "correspond")),                        # no domain at all
    ("+comment@csirt.example", None),
    ("-comment@csirt.example", None),
    ('""@csirt.example', None),
])
def test_route(address, expected):
    assert route(address) == expected
