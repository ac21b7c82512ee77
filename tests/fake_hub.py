"""A Hugging Face Hub served over loopback, for tests of code that resolves Hub ids (no network).

A stdlib HTTP server on 127.0.0.1 (random port) speaking the endpoints ``huggingface_hub`` calls
to download files and read repo metadata:

* ``HEAD|GET /{repo_id}/resolve/{revision}/{path}``: file metadata (``X-Repo-Commit``, ``ETag``,
  ``Content-Length``) and contents; ``X-Error-Code: EntryNotFound`` / ``RevisionNotFound`` /
  ``RepoNotFound`` on 404, as the Hub answers;
* ``GET /api/models/{repo_id}[/revision/{revision}]``: model info (``sha``, ``siblings``);
* ``GET /api/models/{repo_id}/tree/{revision}[/{path}]``: the file listing.

Each repo revision is a local folder; a revision is reachable by name and by its commit hash (what
clients resolve a branch to). Every request is recorded in :attr:`FakeHub.requests`, and requests
it cannot answer in :attr:`FakeHub.unhandled` (a test can assert nothing was missed).

Point a client at it with ``HF_ENDPOINT=hub.url``, ``HF_HOME`` in a temporary folder and
``HF_HUB_OFFLINE`` unset; ``huggingface_hub`` reads these when it is imported, so run the client in a
subprocess with :meth:`FakeHub.client_env`::

    with FakeHub() as hub:
        hub.add_repo("me/model", folder)                       # revision "main"
        hub.add_repo("me/model", other_folder, revision="v2")
        subprocess.run([python, "-c", code], env=hub.client_env(tmp_path / "hf_home"), check=True)
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["FakeHub"]

# Variables that would make a client skip the server, use another cache or phone home.
_CLIENT_ENV_DROP = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_CACHE",
                    "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_TOKEN", "HF_HUB_ENABLE_HF_TRANSFER")


class FakeHub:
    """Loopback Hub server; use as a context manager (starts and stops the server thread)."""

    def __init__(self) -> None:
        # repo_id -> {revision name or commit hash -> (commit hash, folder)}
        self._repos: dict[str, dict[str, tuple[str, Path]]] = {}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- setup -------------------------------------------------------------------------------

    def add_repo(self, repo_id: str, folder: str | Path, revision: str = "main") -> str:
        """Serve ``folder`` as ``repo_id`` at ``revision``; returns the revision's commit hash."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"FakeHub.add_repo: {folder} is not a folder.")
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        revisions = self._repos.setdefault(repo_id, {})
        revisions[revision] = revisions[commit] = (commit, folder)
        return commit

    def commit(self, repo_id: str, revision: str = "main") -> str:
        """The commit hash ``revision`` of ``repo_id`` resolves to."""
        return self._repos[repo_id][revision][0]

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not running (use it as a context manager).")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def client_env(self, hf_home: str | Path, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) pointed at this server, online, with
        its own ``HF_HOME``, telemetry off."""
        env = dict(os.environ if base is None else base)
        for name in _CLIENT_ENV_DROP:
            env.pop(name, None)
        env.update(HF_ENDPOINT=self.url, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
                   VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", NO_PROXY="127.0.0.1,localhost",
                   no_proxy="127.0.0.1,localhost")
        return env

    def requested_files(self, repo_id: str) -> list[tuple[str, str]]:
        """(revision, path) of every ``resolve`` request for ``repo_id``, in order."""
        prefix = f"/{repo_id}/resolve/"
        out = []
        for _, path in self.requests:
            if path.startswith(prefix):
                revision, _, file = path[len(prefix):].partition("/")
                out.append((revision, file))
        return out

    # -- server ------------------------------------------------------------------------------

    def __enter__(self) -> FakeHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = self._thread = None

    # -- request handling --------------------------------------------------------------------

    def _lookup(self, repo_id: str, revision: str) -> tuple[str, Path] | str:
        if repo_id not in self._repos:
            return "RepoNotFound"
        return self._repos[repo_id].get(unquote(revision), "RevisionNotFound")

    def _files(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file())

    def _model_info(self, repo_id: str, revision: str):
        found = self._lookup(repo_id, revision)
        if isinstance(found, str):
            return 404, {"X-Error-Code": found}, {"error": found}
        commit, folder = found
        siblings = [{"rfilename": p.relative_to(folder).as_posix()} for p in self._files(folder)]
        body = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": False, "disabled": False,
                "gated": False, "tags": [], "siblings": siblings, "lastModified": "2026-01-01T00:00:00.000Z"}
        return 200, {}, body

    def _tree(self, repo_id: str, revision: str, sub: str):
        found = self._lookup(repo_id, revision)
        if isinstance(found, str):
            return 404, {"X-Error-Code": found}, {"error": found}
        _, folder = found
        entries = []
        for p in self._files(folder):
            rel = p.relative_to(folder).as_posix()
            if sub and not rel.startswith(sub.rstrip("/") + "/"):
                continue
            data = p.read_bytes()
            entries.append({"type": "file", "path": rel, "size": len(data),
                            "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()})
        return 200, {}, entries

    def _resolve(self, repo_id: str, revision: str, file: str):
        found = self._lookup(repo_id, revision)
        if isinstance(found, str):
            return 404, {"X-Error-Code": found}, None
        commit, folder = found
        path = (folder / unquote(file)).resolve()
        if folder.resolve() not in path.parents or not path.is_file():
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, None
        data = path.read_bytes()
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        return 200, {"X-Repo-Commit": commit, "ETag": etag, "Content-Type": "application/octet-stream"}, data

    def _route(self, method: str, raw_path: str):
        """(status, headers, body) for a request; body is bytes, a JSON-able value or None."""
        path = urlsplit(raw_path).path
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = "/".join(parts[2:4])
            rest = parts[4:]
            if not rest:
                return self._model_info(repo_id, "main")
            if rest[0] == "revision" and len(rest) >= 2:
                return self._model_info(repo_id, "/".join(rest[1:]))
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo_id, rest[1], "/".join(rest[2:]))
        elif len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        self.unhandled.append((method, raw_path))
        return 404, {"X-Error-Code": "EntryNotFound"}, {"error": "not served by FakeHub"}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, method: str) -> None:
            hub.requests.append((method, self.path))
            status, headers, body = hub._route(method, self.path)
            if body is not None and not isinstance(body, bytes):
                body = json.dumps(body).encode()
                headers = {**headers, "Content-Type": "application/json"}
            body = body or b""
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method == "GET":
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer("HEAD")

        def do_GET(self) -> None:  # noqa: N802
            self._answer("GET")

        def log_message(self, format: str, *args) -> None:  # requests are recorded, not printed
            pass

    return Handler
