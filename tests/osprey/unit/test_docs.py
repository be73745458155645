"""The README's configuration table is the one the code defines."""
from pathlib import Path

from osprey.config import markdown_table

ROOT = Path(__file__).resolve().parents[3]


def test_readme_config_table_matches_the_code():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- config-table -->\n", 1)[1].split("<!-- /config-table -->", 1)[0]
    assert table.strip() == markdown_table().strip()
