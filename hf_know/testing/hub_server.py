"""A Hub-compatible HTTP server on 127.0.0.1, for tests and demos that must not leave the machine.

It serves the part of the Hugging Face Hub API that the real `huggingface_hub` client uses to create and delete
repos, commit small files inline and large files through the Git LFS batch protocol (basic transfer), create
branches and tags, list refs, commits and files, and download any file at any revision (branch, tag or commit).
Xet storage is not served: `LoopbackHub` turns it off in the client (`HF_HUB_DISABLE_XET=1`).

Repositories live in memory, file contents in a content-addressed folder on disk. The server binds 127.0.0.1 only,
serves nothing but the blobs it stored (an LFS oid is a sha256 digest or the request is refused), and, when started
with a token, answers only requests that carry it (LFS uploads carry a signature in their URL instead).

One module of about 580 lines: every route reads and writes the same in-memory state through one request handler,
and splitting the Hub API's routes across files would spread that state's invariants with them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# Files the Hub stores through LFS by default (.gitattributes of a new repo), and the size above which any file is.
LFS_PATTERNS = (
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.h5",
    "*.npz",
    "*.npy",
    "*.onnx",
    "*.pkl",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
# The one user of the server: `whoami` answers it, and repos created without an organization are its.
USER = "loopback-user"
_SHA1_HEX = re.compile(r"^[0-9a-f]{40}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class StoredFile:
    sha256: str
    size: int
    git_oid: str
    lfs: bool


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    files: dict[str, StoredFile]
    date: str


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and _SHA1_HEX.match(revision):
            oid = revision
        return self.commits.get(oid) if oid else None


class HubError(Exception):
    """An HTTP error answered the way the Hub does (status, `X-Error-Code`, JSON `error`)."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubState:
    """Repositories, refs and blobs; every method is safe to call from the server's threads."""

    def __init__(self, storage: Path, token: str | None = None):
        self.storage = Path(storage)
        (self.storage / "blobs").mkdir(parents=True, exist_ok=True)
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()

    # blobs
    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this sha256 lives; anything but 64 lowercase hex characters is refused, so no request
        can name a path outside the blob folder."""
        if not isinstance(sha256, str) or not _SHA256_HEX.match(sha256):
            raise HubError(400, f"Invalid LFS oid {sha256!r}: expected a sha256 digest of 64 hex characters.")
        return self.storage / "blobs" / sha256

    def upload_signature(self, oid: str) -> str:
        """The signature an LFS upload URL carries (as a real Hub's presigned URLs do), since the client sends no
        Authorization header with the upload itself."""
        return hmac.new((self.token or "").encode(), oid.encode(), hashlib.sha256).hexdigest()

    def put_blob(self, data: bytes, expected_sha256: str | None = None) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise HubError(400, f"Uploaded content has sha256 {digest}, expected {expected_sha256}.")
        path = self.blob_path(digest)
        if not path.exists():
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return digest

    # repos
    def repo(self, repo_type: str, repo_id: str) -> Repo:
        with self.lock:
            repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id!r} ({repo_type}) not found.", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}")
            repo = Repo(repo_id, repo_type)
            attributes = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS)
            files = {".gitattributes": self._store_regular(attributes.encode())}
            repo.branches["main"] = self._make_commit(repo, None, "initial commit", "", files).oid
            self.repos[(repo_type, repo_id)] = repo
            return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            if self.repos.pop((repo_type, repo_id), None) is None:
                raise HubError(404, f"Repository {repo_id!r} not found.", "RepoNotFound")

    def _store_regular(self, data: bytes) -> StoredFile:
        return StoredFile(self.put_blob(data), len(data), _git_blob_oid(data), lfs=False)

    def _make_commit(self, repo: Repo, parent: str | None, title: str, message: str, files) -> Commit:
        seed = json.dumps([repo.repo_id, parent, title, time.time_ns(), sorted(files)]).encode()
        commit = Commit(hashlib.sha1(seed).hexdigest(), parent, title, message, dict(files), _now())
        repo.commits[commit.oid] = commit
        return commit

    def commit(self, repo: Repo, branch: str, header: dict, operations: list[dict]) -> Commit:
        with self.lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch} is not a branch of {repo.repo_id}.", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent and parent != head.oid:
                raise HubError(412, f"A commit has happened since {parent}; the head of {branch} is {head.oid}.")
            files = dict(head.files)
            for op in operations:
                key, value = op["key"], op["value"]
                if key == "file":
                    files[value["path"]] = self._store_regular(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    blob = self.blob_path(value["oid"])
                    if not blob.exists():
                        raise HubError(400, f"LFS object {value['oid']} for {value['path']} was never uploaded.")
                    files[value["path"]] = StoredFile(value["oid"], blob.stat().st_size, "", lfs=True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"File {value['path']} not found.", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {path: f for path, f in files.items() if not path.startswith(prefix)}
                else:
                    raise HubError(400, f"Unsupported commit operation {key!r}.")
            commit = self._make_commit(
                repo, head.oid, header.get("summary") or "update", header.get("description", ""), files
            )
            repo.branches[branch] = commit.oid
            return commit

    def create_ref(self, repo: Repo, kind: str, name: str, revision: str) -> None:
        with self.lock:
            refs = repo.branches if kind == "branch" else repo.tags
            if name in refs:
                raise HubError(409, f"{kind.capitalize()} {name!r} already exists in {repo.repo_id}.")
            commit = repo.resolve(revision)
            if commit is None:
                raise HubError(404, f"Revision {revision!r} not found in {repo.repo_id}.", "RevisionNotFound")
            refs[name] = commit.oid

    def delete_ref(self, repo: Repo, kind: str, name: str) -> None:
        with self.lock:
            refs = repo.branches if kind == "branch" else repo.tags
            if refs.pop(name, None) is None:
                raise HubError(404, f"{kind.capitalize()} {name!r} not found.", "RevisionNotFound")


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes Hub API requests to `HubState`."""

    protocol_version = "HTTP/1.1"
    server: _HubHTTPServer

    def log_message(self, format, *args):
        pass  # quiet: tests read failures from the client's exceptions

    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    # dispatch
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        path = url.path
        try:
            body = self._read_body()
            for route_method, pattern, handler in ROUTES:
                match = pattern.match(path)
                if match and method in route_method.split("|"):
                    if handler is HubRequestHandler.lfs_upload:
                        self._check_upload_signature(match["oid"])
                    else:
                        self._check_token()
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    handler(self, method, body, **params)
                    return
            raise HubError(404, f"No route for {method} {path}.")
        except HubError as error:
            self._send_json({"error": error.message}, error.status, error_code=error.code)
        except (KeyError, ValueError, TypeError) as error:  # a malformed request: answer, never hang up
            self._send_json({"error": f"Bad request: {error!r}"}, 400)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _check_token(self) -> None:
        """Every request (reads too) carries `Authorization: Bearer <token>` when the server has a token."""
        if self.state.token is None:
            return
        if not hmac.compare_digest(self.headers.get("Authorization", ""), f"Bearer {self.state.token}"):
            raise HubError(401, "Invalid credentials in Authorization header.")

    def _check_upload_signature(self, oid: str) -> None:
        if self.state.token is None:
            return
        if not hmac.compare_digest(self.query.get("signature", [""])[0], self.state.upload_signature(oid)):
            raise HubError(403, "LFS upload URL without a valid signature.")

    # responses
    def _send(self, status: int, payload: bytes, content_type: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer, error or not, has no body: the connection is kept alive
            self.wfile.write(payload)

    def _send_json(self, obj, status: int = 200, error_code: str | None = None) -> None:
        headers = {"X-Error-Code": error_code} if error_code else {}
        if status >= 400:
            headers["X-Error-Message"] = obj.get("error", "")
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    # routes
    def whoami(self, method, body):
        self._send_json({"type": "user", "name": USER, "orgs": [], "auth": {"type": "access_token"}})

    def validate_yaml(self, method, body):
        """Parse the README's YAML header, as the Hub does before a commit that changes the card."""
        content = json.loads(body)["content"]
        header = re.match(r"^---\n(.*?)\n---", content, re.DOTALL)
        try:
            metadata = yaml.safe_load(header.group(1)) if header else {}
        except yaml.YAMLError as error:
            self._send_json({"errors": [{"message": f"Invalid YAML: {error}"}]}, 400)
            return
        warnings = [] if metadata else [{"message": "Empty or missing yaml metadata in repo card"}]
        self._send_json({"errors": [], "warnings": warnings})

    def create_repo(self, method, body):
        payload = json.loads(body or b"{}")
        repo_id = _repo_id(payload)
        repo_type = payload.get("type") or "model"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.base}/{prefix}{repo_id}"
        try:
            self.state.create_repo(repo_type, repo_id)
        except HubError as error:  # the Hub names the existing repo's URL in its 409
            self._send_json({"error": error.message, "url": url}, error.status)
            return
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, method, body):
        payload = json.loads(body or b"{}")
        repo_id = _repo_id(payload)
        self.state.delete_repo(payload.get("type") or "model", repo_id)
        self._send_json({})

    def repo_info(self, method, body, kind, repo_id, revision="main"):
        repo = self.state.repo(REPO_TYPES[kind], repo_id)
        commit = _resolve(repo, revision)
        siblings = [{"rfilename": path} for path in sorted(commit.files)]
        self._send_json(
            {
                "id": repo_id,
                "sha": commit.oid,
                "private": False,
                "lastModified": commit.date,
                "siblings": siblings,
                "tags": [],
            }
        )

    def preupload(self, method, body, kind, repo_id, revision):
        repo = self.state.repo(REPO_TYPES[kind], repo_id)
        _resolve(repo, revision)
        files = json.loads(body)["files"]
        modes = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if _is_lfs(f["path"], f["size"]) else "regular",
                "shouldIgnore": False,
            }
            for f in files
        ]
        self._send_json({"files": modes})

    def commit(self, method, body, kind, repo_id, revision):
        repo = self.state.repo(REPO_TYPES[kind], repo_id)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit payload starts with a header line.")
        commit = self.state.commit(repo, revision, lines[0]["value"], lines[1:])
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._send_json(
            {
                "commitUrl": f"{self.base}/{prefix}{repo_id}/commit/{commit.oid}",
                "commitOid": commit.oid,
                "pullRequestUrl": None,
                "success": True,
            }
        )

    def lfs_batch(self, method, body, repo_id, prefix=None):
        repo_type = REPO_TYPES.get((prefix or "").rstrip("/"), "model")
        self.state.repo(repo_type, repo_id)
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if not self.state.blob_path(obj["oid"]).exists():
                signature = self.state.upload_signature(obj["oid"])
                entry["actions"] = {
                    "upload": {"href": f"{self.base}/__lfs/{obj['oid']}?signature={signature}"},
                    "verify": {"href": f"{self.base}/__lfs/{obj['oid']}/verify"},
                }
            objects.append(entry)
        self._send_json({"transfer": "basic", "objects": objects})

    def lfs_upload(self, method, body, oid):
        self.state.put_blob(body, expected_sha256=oid)
        self._send(200, b"", "text/plain")

    def lfs_verify(self, method, body, oid):
        payload = json.loads(body)
        blob = self.state.blob_path(oid)
        if not blob.exists() or blob.stat().st_size != payload["size"]:
            raise HubError(404, f"LFS object {oid} of size {payload['size']} not found.")
        self._send_json({})

    def tree(self, method, body, kind, repo_id, revision, path=""):
        repo = self.state.repo(REPO_TYPES[kind], repo_id)
        commit = _resolve(repo, revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries, folders = [], set()
        for file_path, stored in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix) :].split("/")
            for depth in range(1, len(rest)):
                folders.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                entries.append(_tree_file(file_path, stored))
        if prefix and not entries and not folders:
            raise HubError(404, f"{path} not found at {revision}.", "EntryNotFound")
        for folder in sorted(folders):
            if recursive or "/" not in folder[len(prefix) :]:
                entries.append({"type": "directory", "path": folder, "oid": _git_blob_oid(folder.encode()), "size": 0})
        self._send_json(entries)

    def refs(self, method, body, kind, repo_id):
        repo = self.state.repo(REPO_TYPES[kind], repo_id)

        def listing(refs, ref_prefix):
            return [{"name": n, "ref": f"{ref_prefix}{n}", "targetCommit": oid} for n, oid in sorted(refs.items())]

        self._send_json(
            {
                "branches": listing(repo.branches, "refs/heads/"),
                "tags": listing(repo.tags, "refs/tags/"),
                "converts": [],
            }
        )

    def commits(self, method, body, kind, repo_id, revision):
        repo = self.state.repo(REPO_TYPES[kind], repo_id)
        commit, history = _resolve(repo, revision), []
        while commit is not None:
            history.append(
                {
                    "id": commit.oid,
                    "title": commit.title,
                    "message": commit.message,
                    "authors": [{"user": USER}],
                    "date": commit.date,
                }
            )
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._send_json(history)

    def branch(self, method, body, kind, repo_id, name):
        repo = self.state.repo(REPO_TYPES[kind], repo_id)
        if method == "DELETE":
            self.state.delete_ref(repo, "branch", name)
        else:
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            self.state.create_ref(repo, "branch", name, start)
        self._send_json({})

    def tag(self, method, body, kind, repo_id, revision):
        repo = self.state.repo(REPO_TYPES[kind], repo_id)
        if method == "DELETE":
            self.state.delete_ref(repo, "tag", revision)
        else:
            self.state.create_ref(repo, "tag", json.loads(body)["tag"], revision)
        self._send_json({})

    def resolve_file(self, method, body, repo_id, revision, path, prefix=None):
        repo_type = REPO_TYPES.get((prefix or "").rstrip("/"), "model")
        repo = self.state.repo(repo_type, repo_id)
        commit = _resolve(repo, revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"Entry {path} not found at {revision} of {repo_id}.", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if stored.lfs:
            headers.update({"ETag": f'"{stored.sha256}"', "X-Linked-Etag": f'"{stored.sha256}"'})
            headers["X-Linked-Size"] = str(stored.size)
        else:
            headers["ETag"] = f'"{stored.git_oid}"'
        data = self.state.blob_path(stored.sha256).read_bytes()
        status, ranged = 200, re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged.group(1))
            end = int(ranged.group(2)) + 1 if ranged.group(2) else len(data)
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            data, status = data[start:end], 206
        self._send(status, data, "application/octet-stream", headers)


_REPO = r"(?P<repo_id>[^/]+/[^/]+|[^/]+)"
_KIND = r"(?P<kind>models|datasets|spaces)"
ROUTES = [
    ("GET", re.compile(r"^/api/whoami-v2$"), HubRequestHandler.whoami),
    ("POST", re.compile(r"^/api/repos/create$"), HubRequestHandler.create_repo),
    ("POST", re.compile(r"^/api/validate-yaml$"), HubRequestHandler.validate_yaml),
    ("DELETE", re.compile(r"^/api/repos/delete$"), HubRequestHandler.delete_repo),
    (
        "POST",
        re.compile(rf"^/api/{_KIND}/{_REPO}/preupload/(?P<revision>[^/]+)$"),
        HubRequestHandler.preupload,
    ),
    ("POST", re.compile(rf"^/api/{_KIND}/{_REPO}/commit/(?P<revision>[^/]+)$"), HubRequestHandler.commit),
    (
        "GET",
        re.compile(rf"^/api/{_KIND}/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?$"),
        HubRequestHandler.tree,
    ),
    ("GET", re.compile(rf"^/api/{_KIND}/{_REPO}/refs$"), HubRequestHandler.refs),
    ("GET", re.compile(rf"^/api/{_KIND}/{_REPO}/commits/(?P<revision>[^/]+)$"), HubRequestHandler.commits),
    ("POST|DELETE", re.compile(rf"^/api/{_KIND}/{_REPO}/branch/(?P<name>[^/]+)$"), HubRequestHandler.branch),
    ("POST|DELETE", re.compile(rf"^/api/{_KIND}/{_REPO}/tag/(?P<revision>[^/]+)$"), HubRequestHandler.tag),
    ("GET", re.compile(rf"^/api/{_KIND}/{_REPO}/revision/(?P<revision>[^/]+)$"), HubRequestHandler.repo_info),
    ("GET", re.compile(rf"^/api/{_KIND}/{_REPO}$"), HubRequestHandler.repo_info),
    ("POST", re.compile(r"^/__lfs/(?P<oid>[0-9a-f]{64})/verify$"), HubRequestHandler.lfs_verify),
    ("PUT", re.compile(r"^/__lfs/(?P<oid>[0-9a-f]{64})$"), HubRequestHandler.lfs_upload),
    (
        "POST",
        re.compile(r"^/(?P<prefix>datasets/|spaces/)?" + _REPO + r"\.git/info/lfs/objects/batch$"),
        HubRequestHandler.lfs_batch,
    ),
    (
        "GET|HEAD",
        re.compile(r"^/(?P<prefix>datasets/|spaces/)?" + _REPO + r"/resolve/(?P<revision>[^/]+)/(?P<path>.+)$"),
        HubRequestHandler.resolve_file,
    ),
]


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, state: HubState):
        super().__init__(address, HubRequestHandler)
        self.state = state


def _repo_id(payload: dict) -> str:
    """The repo a create/delete request names; one without an organization is the user's, as on the Hub."""
    return f"{payload.get('organization') or USER}/{payload['name']}"


def _resolve(repo: Repo, revision: str) -> Commit:
    commit = repo.resolve(revision)
    if commit is None:
        raise HubError(404, f"Invalid rev id: {revision} in {repo.repo_id}.", "RevisionNotFound")
    return commit


def _is_lfs(path: str, size: int) -> bool:
    return size >= LFS_SIZE_THRESHOLD or any(fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)


def _tree_file(path: str, stored: StoredFile) -> dict:
    entry = {"type": "file", "path": path, "size": stored.size, "oid": stored.git_oid or stored.sha256[:40]}
    if stored.lfs:
        entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": 134}
    return entry


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
