"""A small Hugging Face Hub-compatible HTTP server for offline tests (stdlib only).

It implements the slice of the Hub API that `huggingface_hub` 2.4 calls to create repos, push folders (regular,
base64-inlined commits: `preupload` answers `uploadMode: "regular"` for every file, so no LFS/Xet is needed) and
download them again (`hf_hub_download`, `snapshot_download`, `from_pretrained`):

    GET  /api/whoami-v2
    POST /api/repos/create                                   409 with `url` when the repo exists
    POST /api/validate-yaml
    GET  /api/{models|datasets}/{repo_id}[/revision/{rev}]   `sha`, `siblings`, `private`
    POST /api/{type}s/{repo_id}/preupload/{rev}
    POST /api/{type}s/{repo_id}/commit/{rev}                 NDJSON: header, file, deletedFile, deletedFolder
    POST /api/{type}s/{repo_id}/branch/{branch}
    POST /api/{type}s/{repo_id}/paths-info/{rev}
    GET  /api/{type}s/{repo_id}/tree/{rev}[/{path}]           `?recursive=true`
    GET  /api/{type}s/{repo_id}/refs
    HEAD/GET /[datasets/]{repo_id}/resolve/{rev}/{path}      X-Repo-Commit, ETag, Content-Length (no body on HEAD)

Anything missing answers 404 with `X-Error-Code` `RepoNotFound`, `RevisionNotFound` or `EntryNotFound`, which
`huggingface_hub` turns into `RepositoryNotFoundError`, `RevisionNotFoundError` and `EntryNotFoundError`.

Storage is in memory: each commit keeps a `{path: bytes}` snapshot (files are tiny in tests), so resolving by branch
name or by commit sha both work, as `snapshot_download` needs. Commit shas are 40 hex characters derived from a
per-repo commit counter. Private repos are hidden from requests without an `Authorization` header; any bearer token
is accepted.

Usage:

    with HubServer() as hub:
        env = hub.env(hf_home)  # HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE=0, ... for a subprocess
        ...

or `python tests/hub_server.py` to run one in the foreground.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import re
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

USER = "tester"
REPO_TYPES = {"models": "model", "datasets": "dataset"}
URL_PREFIXES = {"model": "", "dataset": "datasets/"}
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha(content: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's `oid` and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}
    branches: dict[str, str] = field(default_factory=dict)  # name -> sha
    num_commits: int = 0
    last_modified: float = field(default_factory=time.time)

    def new_commit(self, files: dict[str, bytes], branch: str) -> str:
        self.num_commits += 1
        sha = hashlib.sha1(f"{self.repo_type}/{self.repo_id}@{self.num_commits}".encode()).hexdigest()
        self.commits[sha] = files
        self.branches[branch] = sha
        self.last_modified = time.time()
        return sha

    def resolve(self, revision: str) -> str | None:
        """Branch name or commit sha -> commit sha (None when unknown)."""
        if revision in self.branches:
            return self.branches[revision]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in self.branches:
            return self.branches[revision[len("refs/heads/") :]]
        return revision if revision in self.commits else None


class HubError(Exception):
    """An HTTP error answer: status, `X-Error-Code` and a message (also sent as JSON `{"error": ...}`)."""

    def __init__(self, status: int, message: str, error_code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.extra = status, message, error_code, extra or {}


class HubServer:
    """A Hub-compatible server on 127.0.0.1 (a free port), run in a daemon thread.

    Attributes:
        url (`str`): the endpoint to use as `HF_ENDPOINT`, e.g. `http://127.0.0.1:43117`.
        repos (`dict[tuple[str, str], Repo]`): the store, keyed by `(repo_type, repo_id)`.
        requests (`list[tuple[str, str]]`): `(method, path)` of every request served, for assertions.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, hf_home: str) -> dict[str, str]:
        """Environment variables that point `huggingface_hub`/`transformers` at this server with a fresh cache."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": "dummy",
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            # Commits inline bytes (regular uploads); the Xet pipeline would need a CAS server.
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HOME": hf_home,
        }

    def add_repo(self, repo_type: str, repo_id: str, files: dict[str, bytes], private: bool = False) -> Repo:
        """Serve `files` (`{path: bytes}`) as `repo_id` in one commit on `main`, under any namespace (a test's
        stand-in for a repo that already exists on the Hub, e.g. `openai-community/gpt2`)."""
        with self.lock:
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private)
            repo.new_commit({".gitattributes": GITATTRIBUTES}, "main")
            repo.new_commit({".gitattributes": GITATTRIBUTES, **files}, "main")
            self.repos[(repo_type, repo_id)] = repo
            return repo

    # ---- store helpers (call with self.lock held) ----

    def repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    def get_repo(self, repo_type: str, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository Not Found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def get_files(self, repo: Repo, revision: str) -> tuple[str, dict[str, bytes]]:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, repo.commits[sha]


def _tree_entries(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
    """Hub `tree` entries under `prefix` (files and directories), sorted; immediate children unless `recursive`."""
    base = prefix.strip("/")
    under = [p for p in files if not base or p.startswith(base + "/")]
    entries: dict[str, dict] = {}
    for path in under:
        relative = path[len(base) + 1 :] if base else path
        parts = relative.split("/")
        depth = len(parts) if recursive else 1
        for i in range(1, min(depth, len(parts)) + 1):
            entry_path = posixpath.join(base, *parts[:i]) if base else "/".join(parts[:i])
            if i == len(parts):
                content = files[path]
                entries[entry_path] = {"type": "file", "oid": git_blob_sha(content), "size": len(content)}
            elif entry_path not in entries:
                entries[entry_path] = {"type": "directory", "oid": hashlib.sha1(entry_path.encode()).hexdigest()}
                entries[entry_path]["size"] = 0
    return [{**entries[p], "path": p} for p in sorted(entries)]


def _path_info(files: dict[str, bytes], path: str) -> dict | None:
    path = path.strip("/")
    if path in files:
        return {"type": "file", "path": path, "oid": git_blob_sha(files[path]), "size": len(files[path])}
    if any(p.startswith(path + "/") for p in files):
        return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0}
    return None


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every answer carries a Content-Length

        def log_message(self, format, *args):  # noqa: A002 (stdlib signature); quiet in test output
            pass

        # ---- plumbing ----

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _json_body(self) -> dict:
            body = self._body()
            try:
                return json.loads(body or b"{}")
            except json.JSONDecodeError as err:
                raise HubError(400, f"invalid JSON body: {err}") from err

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type=None) -> None:
            self.send_response(status)
            headers = dict(headers or {})
            if content_type:
                headers.setdefault("Content-Type", content_type)
            headers.setdefault("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _send_json(self, obj, status: int = 200, headers: dict | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers, content_type="application/json")

        def _authorized(self) -> bool:
            return self.headers.get("Authorization", "").startswith("Bearer ")

        def _require_auth(self) -> None:
            if not self._authorized():
                raise HubError(401, "Invalid credentials in Authorization header")

        def _dispatch(self) -> None:
            split = urlsplit(self.path)
            with server.lock:
                server.requests.append((self.command, split.path))
            self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            # Split before unquoting: revisions and paths may carry `%2F`.
            segments = [unquote(s) for s in split.path.strip("/").split("/")] if split.path.strip("/") else []
            try:
                self._route(segments)
            except HubError as err:
                headers = {"X-Error-Message": err.message}
                if err.error_code:
                    headers["X-Error-Code"] = err.error_code
                self._send_json({"error": err.message, **err.extra}, err.status, headers)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

        # ---- routing ----

        def _route(self, segments: list[str]) -> None:
            method = self.command
            if segments[:1] == ["api"]:
                rest = segments[1:]
                if rest == ["whoami-v2"] and method == "GET":
                    return self._whoami()
                if rest == ["repos", "create"] and method == "POST":
                    return self._create_repo()
                if rest == ["validate-yaml"] and method == "POST":
                    return self._validate_yaml()
                if len(rest) >= 3 and rest[0] in REPO_TYPES:
                    return self._repo_api(REPO_TYPES[rest[0]], f"{rest[1]}/{rest[2]}", rest[3:])
                raise HubError(404, f"no such endpoint: {method} {self.path}")
            repo_type = "model"
            if segments[:1] == ["datasets"]:
                repo_type, segments = "dataset", segments[1:]
            if len(segments) >= 5 and segments[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(repo_type, f"{segments[0]}/{segments[1]}", segments[3], "/".join(segments[4:]))
            raise HubError(404, f"no such endpoint: {method} {self.path}")

        def _repo_api(self, repo_type: str, repo_id: str, rest: list[str]) -> None:
            method = self.command
            action, args = (rest[0], rest[1:]) if rest else (None, [])
            with server.lock:
                repo = server.get_repo(repo_type, repo_id, self._authorized())
                if action is None and method == "GET":
                    return self._repo_info(repo, "main")
                if action == "revision" and args and method == "GET":
                    return self._repo_info(repo, "/".join(args))
                if action == "tree" and args and method == "GET":
                    return self._tree(repo, args[0], "/".join(args[1:]))
                if action == "refs" and method == "GET":
                    return self._refs(repo)
                if action == "paths-info" and args and method == "POST":
                    return self._paths_info(repo, "/".join(args))
                if action == "preupload" and args and method == "POST":
                    self._require_auth()
                    return self._preupload(repo, "/".join(args))
                if action == "commit" and args and method == "POST":
                    self._require_auth()
                    return self._commit(repo, "/".join(args))
                if action == "branch" and args and method == "POST":
                    self._require_auth()
                    return self._create_branch(repo, "/".join(args))
            raise HubError(404, f"no such endpoint: {method} {self.path}")

        # ---- endpoints ----

        def _whoami(self) -> None:
            self._require_auth()
            self._send_json(
                {
                    "type": "user",
                    "id": "0" * 24,
                    "name": USER,
                    "fullname": "Test User",
                    "email": None,
                    "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "dummy", "role": "write"}},
                }
            )

        def _create_repo(self) -> None:
            self._require_auth()
            payload = self._json_body()
            repo_type = payload.get("type") or "model"
            if repo_type not in URL_PREFIXES:
                raise HubError(400, f"repo type {repo_type!r} is not supported by this test server")
            name = payload.get("name")
            if not name or not re.fullmatch(r"[\w.\-]{1,96}", name):
                raise HubError(400, f"invalid repo name {name!r}")
            repo_id = f"{payload.get('organization') or USER}/{name}"
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            with server.lock:
                existing = server.repos.get((repo_type, repo_id))
                if existing is not None:
                    raise HubError(409, "You already created this repo", extra={"url": server.repo_url(existing)})
                repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private)
                repo.new_commit({".gitattributes": GITATTRIBUTES}, "main")  # as the Hub: an initial commit
                server.repos[(repo_type, repo_id)] = repo
                self._send_json({"url": server.repo_url(repo), "name": repo_id, "id": "0" * 24})

        def _validate_yaml(self) -> None:
            payload = self._json_body()
            content = payload.get("content", "")
            errors = []
            match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
            if match:
                try:
                    metadata = yaml.safe_load(match.group(1))
                    if metadata is not None and not isinstance(metadata, dict):
                        errors.append({"message": "metadata must be a YAML mapping"})
                except yaml.YAMLError as err:
                    errors.append({"message": f"invalid YAML: {err}"})
            if errors:
                return self._send_json({"errors": errors, "warnings": []}, 400)
            warnings = [] if match else [{"message": "empty or missing yaml metadata in repo card"}]
            self._send_json({"errors": [], "warnings": warnings})

        def _repo_info(self, repo: Repo, revision: str) -> None:
            sha, files = server.get_files(repo, revision)
            modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(repo.last_modified))
            self._send_json(
                {
                    "_id": "0" * 24,
                    "id": repo.repo_id,
                    "author": repo.repo_id.split("/")[0],
                    "sha": sha,
                    "lastModified": modified,
                    "createdAt": modified,
                    "private": repo.private,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": [{"rfilename": path} for path in sorted(files)],
                }
            )

        def _tree(self, repo: Repo, revision: str, path: str) -> None:
            _, files = server.get_files(repo, revision)
            recursive = self.query.get("recursive", "false").lower() in ("1", "true")
            if path and _path_info(files, path) is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
            self._send_json(_tree_entries(files, path, recursive))

        def _refs(self, repo: Repo) -> None:
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha} for name, sha in repo.branches.items()
            ]
            self._send_json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

        def _paths_info(self, repo: Repo, revision: str) -> None:
            _, files = server.get_files(repo, revision)
            body = self._body().decode()
            if "json" in self.headers.get("Content-Type", ""):
                paths = json.loads(body or "{}").get("paths", [])
            else:
                paths = parse_qs(body).get("paths", [])
            infos = [_path_info(files, p) for p in paths]
            self._send_json([info for info in infos if info is not None])

        def _preupload(self, repo: Repo, revision: str) -> None:
            payload = self._json_body()
            sha = repo.resolve(revision)
            files = repo.commits[sha] if sha else {}
            answer = []
            for item in payload.get("files", []):
                existing = files.get(item["path"])
                answer.append(
                    {
                        "path": item["path"],
                        "uploadMode": "regular",  # => the client inlines base64 bytes in the commit
                        "shouldIgnore": False,
                        "oid": git_blob_sha(existing) if existing is not None else None,
                    }
                )
            self._send_json({"files": answer, "commitOid": sha})

        def _commit(self, repo: Repo, revision: str) -> None:
            if self.query.get("create_pr"):
                raise HubError(400, "pull requests are not supported by this test server")
            sha = repo.resolve(revision)
            if sha is None or revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision} (not a branch)", "RevisionNotFound")
            files = dict(repo.commits[sha])
            summary = None
            for line in self._body().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item.get("key"), item.get("value", {})
                if key == "header":
                    summary = value.get("summary")
                    parent = value.get("parentCommit")
                    if parent is not None and parent != sha:
                        raise HubError(412, f"parent commit {parent} is not the head of {revision} ({sha})")
                elif key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')!r} for {value.get('path')}")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    for path in [p for p in files if p.startswith(folder)]:
                        del files[path]
                else:
                    # lfsFile/copy would need LFS storage; preupload never asks for it.
                    raise HubError(400, f"unsupported commit operation {key!r}: this server stores regular files")
            if not summary:
                raise HubError(400, "commit header with a summary is required")
            new_sha = repo.new_commit(files, revision)
            self._send_json(
                {
                    "success": True,
                    "commitOid": new_sha,
                    "commitUrl": f"{server.repo_url(repo)}/commit/{new_sha}",
                    "hookOutput": "",
                }
            )

        def _create_branch(self, repo: Repo, branch: str) -> None:
            payload = self._json_body()
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = repo.resolve(payload.get("startingPoint") or "main")
            if start is None:
                raise HubError(404, f"Invalid rev id: {payload.get('startingPoint')}", "RevisionNotFound")
            repo.branches[branch] = start
            self._send_json({})

        def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
            with server.lock:
                repo = server.get_repo(repo_type, repo_id, self._authorized())
                sha, files = server.get_files(repo, revision)
                content = files.get(path)
            if content is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound", extra={})
            etag = git_blob_sha(content)
            headers = {
                "X-Repo-Commit": sha,
                "ETag": f'"{etag}"',
                "Accept-Ranges": "bytes",
                "Last-Modified": formatdate(repo.last_modified, usegmt=True),
                "Content-Disposition": f"inline; filename*=UTF-8''{quote(posixpath.basename(path))}",
            }
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if match and self.command == "GET":
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else len(content) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
                return self._send(206, content[start : end + 1], headers, "application/octet-stream")
            self._send(200, content, headers, "application/octet-stream")

    return Handler


def patch_hub_env(monkeypatch, env: dict[str, str]) -> None:
    """Point this process's `huggingface_hub`, `transformers` and `datasets` at the server for one test (undone by
    `monkeypatch`).

    `huggingface_hub` reads `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_HOME`... into module constants at import time and
    `transformers` keeps one shared `HfApi`, so setting the environment alone is not enough in-process.
    """
    import os

    from huggingface_hub import constants, hf_api

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    endpoint = env["HF_ENDPOINT"].rstrip("/")
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    url_template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url_template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HOME", env["HF_HOME"])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", os.path.join(env["HF_HOME"], "hub"))
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)  # the HfApi behind `huggingface_hub.create_repo` & co
    # `datasets` keeps its own copies too (`load_dataset`, streaming included, reads them).
    from datasets import config as datasets_config

    monkeypatch.setattr(datasets_config, "HF_ENDPOINT", endpoint)
    datasets_url = endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"
    monkeypatch.setattr(datasets_config, "HUB_DATASETS_URL", datasets_url)
    monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets_config, "HF_DATASETS_OFFLINE", False)
    try:
        import transformers.utils.hub as transformers_hub
    except ImportError:
        return
    monkeypatch.setattr(transformers_hub, "_hf_api", None)  # rebuilt on first use with the patched endpoint


if __name__ == "__main__":
    with HubServer(port=int(__import__("os").environ.get("PORT", "0"))) as hub:
        print(f"Hub-compatible test server on {hub.url} (Ctrl-C to stop)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
