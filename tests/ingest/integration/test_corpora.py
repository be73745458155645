"""Every mail in ../shared/corpora through the real mailgate, broker and services:
each file stored byte-exact and accounted for (an article, or quarantine with a
reason), no service crash. Prints the table."""
from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from osprey.testing import corpora_dir
from tests.helpers import wait_for

CORPORA = corpora_dir()
# the folders with mail in them (the others hold JSON, whois text, STIX)
MAIL_FOLDERS = ("cpython-email", "flanker", "mimekit", "smime-rfc4134", "ripe-ncc-whois/testMail")


def corpus_files() -> list[tuple[str, Path]]:
    files = []
    for folder in MAIL_FOLDERS:
        for path in sorted((CORPORA / folder).rglob("*")):
            if path.is_file() and path.name != "PROVENANCE.md" and path.stat().st_size > 0:
                files.append((folder.split("/")[0], path))
    return files


def test_every_corpus_mail_is_stored_and_accounted_for(stack, api, capsys):
    files = corpus_files()
    assert len(files) > 250
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda f: stack.mailgate(f[1].read_bytes()).returncode, files))
    assert codes == [0] * len(files)

    outcome: dict[str, dict] = {}

    def settled():
        for _corpus, path in files:
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            if sha in outcome:
                continue
            r = api.get(f"/intake/{sha}")
            if r.status_code != 200 or r.json()["intakes"][0]["status"] == "received":
                return False
            outcome[sha] = r.json()["intakes"][0]
        return True
    wait_for(settled, timeout=300, interval=1, what="every corpus mail processed")

    table: dict[str, Counter] = {}
    for corpus, path in files:
        raw = path.read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        record = outcome[sha]
        assert api.get(f"/intake/{sha}/raw").content == raw, path          # byte-exact
        row = table.setdefault(corpus, Counter())
        row["mails"] += 1
        if record["status"] == "delivered":
            assert record["article_id"] and record["ticket_id"], path
            row["articles"] += 1
        else:
            assert record["status"] == "quarantined" and record["reason"], path
            row["quarantined"] += 1
    crashes = stack.log_errors()
    with capsys.disabled():
        print(f"\n{'corpus':<16}{'mails':>7}{'articles':>10}{'quarantined':>13}{'crashes':>9}")
        for corpus, row in table.items():
            print(f"{corpus:<16}{row['mails']:>7}{row['articles']:>10}{row['quarantined']:>13}{0:>9}")
        total = sum(table.values(), Counter())
        print(f"{'total':<16}{total['mails']:>7}{total['articles']:>10}{total['quarantined']:>13}"
              f"{len(crashes):>9}")
    assert crashes == []
    assert total["articles"] + total["quarantined"] == total["mails"] == len(files)
