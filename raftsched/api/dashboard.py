"""Routes of the admin API: the web dashboard (see make_app).

`GET /` serves the page and `GET /static/{name}` the files beside it in `static/`. Both are public
(the auth middleware lets them through): the page holds no data; every datum it shows comes from
the API, which it calls with the bearer token the operator typed in (kept in sessionStorage).

Plain files, no build step, nothing fetched from elsewhere: the Content-Security-Policy allows
this origin only, no inline scripts or styles, and no form submission anywhere (the page's forms
are sent by its script, so a token never ends up in a URL).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from aiohttp import web

from ..errors import NotFound, quoted

__all__ = ["STATIC_DIR", "add_routes"]

STATIC_DIR: Final = Path(__file__).with_name("static")

_CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
# A plain file name with a known suffix: no directories, no dot files, no traversal.
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9]+)+$")

_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # No build step means no content hashes in names: let browsers keep files but revalidate them
    # (FileResponse answers If-None-Match / If-Modified-Since with 304), so an upgrade shows at once.
    "Cache-Control": "no-cache",
}


def _file_response(path: Path) -> web.FileResponse:
    response = web.FileResponse(path, headers=_SECURITY_HEADERS)
    response.content_type = _CONTENT_TYPES[path.suffix].split(";")[0]
    if "charset=" in _CONTENT_TYPES[path.suffix]:
        response.charset = "utf-8"
    return response


async def index(request: web.Request) -> web.FileResponse:
    return _file_response(STATIC_DIR / "index.html")


async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    path = STATIC_DIR / name
    if not _NAME.fullmatch(name) or path.suffix not in _CONTENT_TYPES or not path.is_file():
        raise NotFound(f"no static file {quoted(name)}")
    return _file_response(path)


def add_routes(app: web.Application) -> None:
    """Register `GET /` (the page) and `GET /static/{name}` (its files) on `app`."""
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
