"""services/ingest/rawstore.py: exact bytes in, exact bytes out, addressed by sha256."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest

from services.ingest.rawstore import BlobNotFound, RawStore, RawStoreError

MAIL = (b"From: a@example.org\r\nSubject: crlf and nul\r\n\r\n"
        b"line one\r\nline two\n\x00\x01binary\xff\xfe\r\n.\r\n")
MAIL_SHA = hashlib.sha256(MAIL).hexdigest()


def files_under(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_put_then_get_is_byte_exact(tmp_path):
    store = RawStore(tmp_path / "raw")
    assert store.put(MAIL) == MAIL_SHA
    assert store.get(MAIL_SHA) == MAIL


@pytest.mark.parametrize("data", [b"", b"\x00", b"\r\n" * 3, b"\r", bytes(range(256)) * 64],
                         ids=["empty", "nul", "crlf", "cr", "all-bytes"])
def test_round_trip_of_awkward_bytes(tmp_path, data):
    store = RawStore(tmp_path)
    assert store.get(store.put(data)) == data


def test_blob_path_layout_is_two_levels_of_sha_prefix(tmp_path):
    store = RawStore(tmp_path)
    store.put(MAIL)
    assert store.path(MAIL_SHA) == tmp_path / MAIL_SHA[:2] / MAIL_SHA[2:4] / MAIL_SHA
    assert files_under(tmp_path) == [f"{MAIL_SHA[:2]}/{MAIL_SHA[2:4]}/{MAIL_SHA}"]


def test_blob_is_read_only_once_written(tmp_path):
    store = RawStore(tmp_path)
    store.put(MAIL)
    assert stat.S_IMODE(store.path(MAIL_SHA).stat().st_mode) == 0o440


def test_put_twice_is_a_no_op(tmp_path):
    store = RawStore(tmp_path)
    store.put(MAIL)
    first = store.path(MAIL_SHA).stat()
    assert store.put(MAIL) == MAIL_SHA
    again = store.path(MAIL_SHA).stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert files_under(tmp_path) == [f"{MAIL_SHA[:2]}/{MAIL_SHA[2:4]}/{MAIL_SHA}"]   # no temp files left


def test_put_repairs_a_truncated_blob(tmp_path):
    store = RawStore(tmp_path)
    store.put(MAIL)
    path = store.path(MAIL_SHA)
    os.chmod(path, 0o640)
    path.write_bytes(MAIL[:10])          # as after a crash of something that bypassed put
    assert store.put(MAIL) == MAIL_SHA
    assert store.get(MAIL_SHA) == MAIL


def test_exists(tmp_path):
    store = RawStore(tmp_path)
    store.put(MAIL)
    assert (store.exists(MAIL_SHA), store.exists("0" * 64)) == (True, False)


def test_store_creates_its_root(tmp_path):
    RawStore(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()


def test_unknown_sha_is_blob_not_found(tmp_path):
    store = RawStore(tmp_path)
    with pytest.raises(BlobNotFound, match="^0{64}$"):
        store.get("0" * 64)


@pytest.mark.parametrize("bad", [
    "", "abc", MAIL_SHA[:63], MAIL_SHA + "0", MAIL_SHA.upper(), "g" * 64,
    "../" + MAIL_SHA[3:], "/etc/passwd", MAIL_SHA[:62] + "\n",
])
def test_malformed_sha_is_blob_not_found(tmp_path, bad):
    store = RawStore(tmp_path)
    store.put(MAIL)
    with pytest.raises(BlobNotFound, match="^not a sha256: "):
        store.get(bad)
    with pytest.raises(BlobNotFound):
        store.exists(bad)


def test_blob_not_found_is_a_raw_store_error():
    assert issubclass(BlobNotFound, RawStoreError)


def test_stored_sha_with_a_trailing_newline_is_not_found(tmp_path):
    # the pattern's "$" lets "<sha>\n" through to path(); the file name then differs
    store = RawStore(tmp_path)
    store.put(MAIL)
    with pytest.raises(BlobNotFound):
        store.get(MAIL_SHA + "\n")
