"""A local stand-in for the Hugging Face Hub: just the endpoints `huggingface_hub.snapshot_download` calls.

`FakeHub(repos)` serves `{repo_id: {revision: folder}}` on 127.0.0.1 in a thread (point HF_ENDPOINT at
`hub.url`); every request path is recorded in `hub.requests`, so a test can tell what was asked and
whether anything was downloaded. Endpoints (huggingface_hub 2.x):

- GET  /api/models/{repo}/revision/{rev}   model_info: {"id", "sha"} (sha = a fake 40-hex commit per revision)
- GET  /api/models/{repo}/tree/{commit}    list_repo_tree: the files, recursive
- HEAD /{repo}/resolve/{commit}/{file}     metadata: X-Repo-Commit, ETag, Content-Length
- GET  /{repo}/resolve/{commit}/{file}     the bytes

An unknown repo answers 404 with `X-Error-Code: RepoNotFound`, an unknown revision `RevisionNotFound`, as
the Hub does; huggingface_hub turns those headers into its typed errors.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


def fake_commit(repo_id: str, revision: str) -> str:
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, Path]]):
        self.repos = repos
        self.requests: list[str] = []
        # commit -> (repo_id, folder): downloads name the commit that model_info returned
        self.commits = {fake_commit(r, rev): (r, Path(f)) for r, revs in repos.items() for rev, f in revs.items()}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def downloads(self) -> list[str]:
        """Paths of the file bodies served (GET …/resolve/…)."""
        return [r.split(" ", 1)[1] for r in self.requests if r.startswith("GET ") and "/resolve/" in r]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                if path.startswith("/api/models/"):
                    self._api(path[len("/api/models/"):])
                elif "/resolve/" in path:
                    self._file(path.lstrip("/"), body)
                else:
                    self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"})

            def _api(self, rest: str) -> None:
                for repo_id, revisions in hub.repos.items():
                    if rest.startswith(repo_id + "/revision/"):
                        revision = rest[len(repo_id + "/revision/"):]
                        if revision not in revisions and revision not in hub.commits:
                            return self._send(404, b'{"error": "no such revision"}', {"X-Error-Code": "RevisionNotFound"})
                        sha = revision if revision in hub.commits else fake_commit(repo_id, revision)
                        return self._json({"id": repo_id, "modelId": repo_id, "sha": sha, "private": False})
                    if rest.startswith(repo_id + "/tree/"):
                        commit = rest[len(repo_id + "/tree/"):]
                        folder = hub.commits[commit][1]
                        return self._json([
                            {"type": "file", "path": p.relative_to(folder).as_posix(), "size": p.stat().st_size,
                             "oid": hashlib.sha1(p.read_bytes()).hexdigest()}
                            for p in sorted(folder.rglob("*")) if p.is_file()
                        ])
                self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})

            def _file(self, rest: str, body: bool) -> None:
                for commit, (repo_id, folder) in hub.commits.items():
                    prefix = f"{repo_id}/resolve/{commit}/"
                    if rest.startswith(prefix) and (folder / rest[len(prefix):]).is_file():
                        data = (folder / rest[len(prefix):]).read_bytes()
                        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                                   "Content-Length": str(len(data))}
                        return self._send(200, data if body else b"", headers, length=len(data))
                self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"})

            def _json(self, obj) -> None:
                self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

            def _send(self, status: int, data: bytes, headers: dict[str, str], length: int | None = None) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(length if length is not None else len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

        return Handler
