"""The embedded search index, kept in the tickets database and written in the same
transaction as the article (so it is never behind the truth).

Text: on SQLite an FTS5 table over subject and body. On PostgreSQL a table of one
``tsvector`` per article under a GIN index, made from FTS5's own tokens (an
in-memory FTS5 table tokenizes: the same words, case folding and diacritics as on
SQLite), subject and body apart so that a phrase never spans the two. Every term
is a phrase, so a query is the same set of phrases on both, and snippets come from
FTS5's ``snippet()`` on both. The ranking differs: bm25 on SQLite, ``ts_rank``
with length normalisation on PostgreSQL. PostgreSQL's limits on a tsvector apply
to long mails: positions end at 16383 (a phrase later in a long mail may be missed,
words are not), 256 positions per word, words of at most 2046 bytes, and about a
megabyte of distinct words with their positions (past that, the words that appear
first in the mail are indexed, the others not).

IPs: ``article_ip`` rows holding 16-byte keys (contracts.ip_key), so an address,
CIDR or range is one indexed BETWEEN (bytes compare as memcmp on both).

The query language here is the first part of the one the search issue specifies:
words (all must match), "exact phrases", and IP expressions (address, CIDR, a-b).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from osprey import contracts

from .exceptions import BadRequest
from .models import ArticleIP

# the tokenizer of the FTS5 table the initial migration makes (keep them equal)
TOKENIZE = "unicode61 remove_diacritics 2"
# the arguments of snippet(): body column, match marks, ellipsis, tokens
SNIPPET_ARGS = "1, char(2), char(3), ' … ', 12"

# PostgreSQL tsvector limits (src/include/tsearch/ts_type.h)
_MAX_POS = 16383          # larger positions are stored as this
_MAX_NPOS = 256           # positions kept per lexeme
_MAX_LEXEME = 2046        # bytes; longer words cannot be stored
_MAX_LEXEMES_BYTES = 1_040_000   # lexemes and positions together (PostgreSQL: < 1 MiB)
_COLUMN_GAP = 2           # positions between subject and body: no phrase spans them

BACKENDS = ("sqlite", "postgresql")


def check_backend(engine: Engine) -> None:
    """The index is made by the initial migration, on SQLite and PostgreSQL only."""
    if engine.dialect.name not in BACKENDS:
        raise RuntimeError(f"the embedded search index needs SQLite (FTS5) or PostgreSQL, not "
                           f"{engine.dialect.name}")


def _dialect(session) -> str:
    return session.get_bind().dialect.name


def index_article(session, article) -> None:
    if _dialect(session) == "postgresql":
        session.execute(text("INSERT INTO article_fts (article_id, doc) VALUES (:id, CAST(:doc AS tsvector))"),
                        {"id": article.id, "doc": tsvector(article.subject or "", article.body_text or "")})
    else:
        session.execute(text("INSERT INTO article_fts(rowid, subject, body) VALUES (:id, :s, :b)"),
                        {"id": article.id, "s": article.subject or "", "b": article.body_text or ""})
    for addr in contracts.find_ips(f"{article.subject}\n{article.body_text}"):
        session.add(ArticleIP(article_id=article.id, ip=contracts.ip_key(addr)))


# --- FTS5's tokens, for PostgreSQL -----------------------------------------------------

def _scratch_fts(ncols: int) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    cols = ", ".join(f"c{i}" for i in range(ncols))
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5({cols}, tokenize = '{TOKENIZE}')")
    return db


def _fts5_instances(*texts: str) -> list[tuple[str, str, int]]:
    """Every token of the texts as FTS5 indexes it: (folded term, column "c<i>",
    offset), ordered by term, then column and offset (fts5vocab's order)."""
    db = _scratch_fts(len(texts))
    try:
        db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        marks = ", ".join("?" for _ in texts)
        db.execute(f"INSERT INTO t VALUES ({marks})", texts)
        return db.execute("SELECT term, col, offset FROM v").fetchall()
    finally:
        db.close()


def fts5_tokens(*texts: str) -> list[list[str]]:
    """Each text's tokens as FTS5 indexes them (folded), in order."""
    found: list[list[tuple[int, str]]] = [[] for _ in texts]
    for term, col, offset in _fts5_instances(*texts):
        found[int(col[1:])].append((offset, term))
    return [[term for _, term in sorted(tokens)] for tokens in found]


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector(subject: str, body: str) -> str:
    """The tsvector (input syntax) of an article: FTS5's tokens with their positions,
    the body's after a gap, within PostgreSQL's limits (see the module's doc)."""
    rows = _fts5_instances(subject, body)
    shift = 1 + max((off for _, col, off in rows if col == "c0"), default=-1) + 1 + _COLUMN_GAP
    positions: dict[str, list[int]] = {}
    for term, col, off in rows:      # by term, then position: each list comes sorted
        pos = min(off + (1 if col == "c0" else shift), _MAX_POS)
        have = positions.get(term)
        if have is None:
            positions[term] = [pos]
        elif len(have) < _MAX_NPOS and have[-1] != pos:
            have.append(pos)
    lengths = {t: len(t.encode("utf-8")) for t in positions}
    kept = [t for t in positions if lengths[t] <= _MAX_LEXEME]
    # what PostgreSQL counts against its limit: the lexeme, alignment, its positions
    sizes = {t: lengths[t] + 1 + 2 + 2 * len(positions[t]) for t in kept}
    if sum(sizes.values()) > _MAX_LEXEMES_BYTES:     # keep the words the mail begins with
        kept.sort(key=lambda t: positions[t][0])
        budget, fitting = _MAX_LEXEMES_BYTES, []
        for t in kept:
            if sizes[t] <= budget:
                budget -= sizes[t]
                fitting.append(t)
        kept = fitting
    return " ".join(f"{_quote(t)}:{','.join(map(str, positions[t]))}" for t in kept)


def tsquery(terms: list[str]) -> str | None:
    """The tsquery (input syntax) of FTS-quoted phrases, all of which must match; None
    when one of them can match nothing (no token, as FTS5: or too long to index)."""
    parts = []
    for term in terms:
        phrase = term[1:-1].replace('""', '"')
        (tokens,) = fts5_tokens(phrase)
        if not tokens or any(len(t.encode("utf-8")) > _MAX_LEXEME for t in tokens):
            return None
        parts.append("(" + " <-> ".join(_quote(t) for t in tokens) + ")")
    return " & ".join(parts)


@dataclass
class Query:
    terms: list[str] = field(default_factory=list)          # words and phrases, FTS-quoted
    ip_ranges: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.terms and not self.ip_ranges


def parse_query(q: str) -> Query:
    query = Query()
    i, n = 0, len(q)
    while i < n:
        if q[i].isspace():
            i += 1
            continue
        if q[i] == '"':
            end = q.find('"', i + 1)
            if end < 0:
                raise BadRequest(f"unclosed quote at position {i + 1}: {q[i:i + 20]!r}")
            phrase = q[i + 1:end].strip()
            if phrase:
                query.terms.append('"' + phrase.replace('"', '""') + '"')
            i = end + 1
            continue
        j = i
        while j < n and not q[j].isspace() and q[j] != '"':
            j += 1
        word = q[i:j]
        i = j
        rng = contracts.parse_ip_range(word) if any(c in word for c in ".:") else None
        if rng is not None:
            query.ip_ranges.append(rng)
        else:
            query.terms.append('"' + word.replace('"', '""') + '"')
    return query


def search_articles(session, q: str, limit: int = 50) -> list[dict]:
    """The best-matching article of each matching ticket, best ticket first, at most
    ``limit`` tickets: [{article_id, ticket_id, snippet}]. Snippets (the costly part)
    are made only for the articles returned."""
    query = parse_query(q)
    if query.empty:
        return []
    postgres = _dialect(session) == "postgresql"
    params: dict = {"limit": limit * 5}
    where, joins = [], []
    for k, (low, high) in enumerate(query.ip_ranges):
        where.append(f"EXISTS (SELECT 1 FROM article_ip ip{k} WHERE ip{k}.article_id = a.id "
                     f"AND ip{k}.ip BETWEEN :lo{k} AND :hi{k})")
        params[f"lo{k}"], params[f"hi{k}"] = low, high
    match = " AND ".join(query.terms) if query.terms else None
    if match and postgres:
        params["tsq"] = tsquery(query.terms)
        if params["tsq"] is None:
            return []
        joins.append("JOIN article_fts f ON f.article_id = a.id")
        where.append("f.doc @@ CAST(:tsq AS tsquery)")
        order = "ts_rank(f.doc, CAST(:tsq AS tsquery), 1) DESC, a.id DESC"
    elif match:
        joins.append("JOIN article_fts f ON f.rowid = a.id")
        where.append("article_fts MATCH :match")
        params["match"] = match
        order = "bm25(article_fts), a.id DESC"
    else:
        order = "a.id DESC"
    sql = (f"SELECT a.id, a.ticket_id FROM article a {' '.join(joins)} "
           f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT :limit")
    try:
        rows = session.execute(text(sql), params).all()
    except OperationalError as exc:  # FTS5 syntax errors surface here
        raise BadRequest(f"cannot search for {q!r}: {exc}") from exc
    best: dict[int, int] = {}   # ticket id -> its best article id, in rank order
    for article_id, ticket_id in rows:
        if ticket_id not in best:
            best[ticket_id] = article_id
            if len(best) >= limit:
                break
    snippets = _snippets(session, list(best.values()), match)
    return [{"article_id": a, "ticket_id": t, "snippet": snippets.get(a, "")} for t, a in best.items()]


def _snippets(session, article_ids: list[int], match: str | None) -> dict[int, str]:
    if not article_ids:
        return {}
    ids = ", ".join(str(int(i)) for i in article_ids)
    if match and _dialect(session) == "postgresql":
        # the same snippet() as on SQLite, over these articles only
        rows = session.execute(text(f"SELECT id, subject, body_text FROM article WHERE id IN ({ids})")).all()
        db = _scratch_fts(2)
        try:
            db.executemany("INSERT INTO t(rowid, c0, c1) VALUES (?, ?, ?)", [tuple(r) for r in rows])
            return dict(db.execute(f"SELECT rowid, snippet(t, {SNIPPET_ARGS}) FROM t WHERE t MATCH ?",
                                   (match,)).fetchall())
        finally:
            db.close()
    if match:
        sql = (f"SELECT rowid, snippet(article_fts, {SNIPPET_ARGS}) FROM article_fts "
               f"WHERE article_fts MATCH :match AND rowid IN ({ids})")
        return dict(session.execute(text(sql), {"match": match}).all())
    return dict(session.execute(text(f"SELECT id, substr(body_text, 1, 160) FROM article WHERE id IN ({ids})")).all())
