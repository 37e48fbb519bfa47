"""The console's files (``static/``: plain HTML, CSS, JavaScript and an icon, shipped as package data),
read once when the HTTP port starts and served from memory: ``/`` is ``index.html``,
``/static/NAME`` the others. Only those files: a name is looked up, never joined to a path.

The page may load only its own scripts and styles and talk only to this port (a Content
Security Policy), so even a record value that slipped into the page as markup could run
nothing."""

from __future__ import annotations

from importlib import resources

from sluice.broker.web.http import HttpError, HttpRequest, HttpResponse

TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
          "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class Assets:
    """The files of ``static/`` by name."""

    def __init__(self) -> None:
        folder = resources.files("sluice.broker.web").joinpath("static")
        self.files: dict[str, HttpResponse] = {}
        for entry in folder.iterdir():
            kind = TYPES.get("." + entry.name.rsplit(".", 1)[-1])
            if kind is not None:
                self.files[entry.name] = HttpResponse(
                    200, entry.read_bytes(), kind,
                    (("Content-Security-Policy", POLICY), ("Cache-Control", "no-cache")))
        if "index.html" not in self.files:
            raise RuntimeError(f"the console's files are missing from {folder}")

    def index(self, request: HttpRequest) -> HttpResponse:
        return self.files["index.html"]

    def file(self, request: HttpRequest, name: str) -> HttpResponse:
        found = self.files.get(name)
        if found is None:
            raise HttpError(404, f"no file {name!r}")
        return found
