"""Byte-exact downloads (raw mail, attachments), shared by the API and the pages.
Rights are checked by tickets first; the bytes come from ingest's raw store."""
from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from osprey import contracts

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._")[:150] or "download"


async def raw_article(request: Request, article_id) -> Response:
    rpc = request.app.state.rpc
    article = await rpc.call("tickets", "get_article", request.state.user["username"], article_id)
    blob = await rpc.call("ingest", "get_raw", article["raw_sha256"])
    data = contracts.unb64(blob["data"])
    return Response(data, media_type="message/rfc822", headers={
        "Content-Disposition": f'attachment; filename="article-{article["id"]}.eml"',
        "X-Osprey-SHA256": contracts.sha256_hex(data)})


async def raw_blob(request: Request, sha256: str) -> Response:
    blob = await request.app.state.rpc.call("ingest", "get_raw", sha256)
    data = contracts.unb64(blob["data"])
    return Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{sha256}.eml"', "X-Osprey-SHA256": contracts.sha256_hex(data)})


async def attachment(request: Request, attachment_id) -> Response:
    rpc = request.app.state.rpc
    att = await rpc.call("tickets", "get_attachment", request.state.user["username"], attachment_id)
    part = await rpc.call("ingest", "get_part", att["raw_sha256"], att["part"])
    data = contracts.unb64(part["data"])
    # never render attachment content in our origin: always a download
    return Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{safe_filename(att["filename"])}"',
        "X-Osprey-SHA256": contracts.sha256_hex(data)})
