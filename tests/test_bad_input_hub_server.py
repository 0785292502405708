"""Bad input, the loopback Hub: it serves only what it stored, only to holders of its token, only on 127.0.0.1."""

import base64
import hashlib
import http.client
import json

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hf_know.hub import push_folder
from hf_know.testing import LoopbackHub


def request(hub, method, path, body=None, token="hub"):
    """(status, body bytes) of one raw request; `token="hub"` sends the server's own token."""
    host, port = hub.endpoint.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {} if token is None else {"Authorization": f"Bearer {hub.state.token if token == 'hub' else token}"}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    result = response.status, response.read()
    connection.close()
    return result


def commit_body(path, oid):
    lines = [{"key": "header", "value": {"summary": "x"}}, {"key": "lfsFile", "value": {"path": path, "oid": oid}}]
    return "\n".join(json.dumps(line) for line in lines).encode()


@pytest.mark.parametrize("oid", ["/etc/passwd", "../../../../etc/passwd", "../blobs/x", "A" * 64, "0" * 63])
def test_lfs_oids_that_are_not_sha256_digests_are_refused(hub, oid):
    repo = "tester/oids"
    HfApi().create_repo(repo, exist_ok=True)
    status, body = request(hub, "POST", f"/api/models/{repo}/commit/main", commit_body("stolen.txt", oid))
    assert status == 400 and b"Invalid LFS oid" in body
    batch = json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": 1}]}).encode()
    status, body = request(hub, "POST", f"/{repo}.git/info/lfs/objects/batch", batch)
    assert status == 400 and b"Invalid LFS oid" in body
    status, _ = request(hub, "GET", f"/{repo}/resolve/main/stolen.txt")
    assert status == 404


def test_a_server_with_a_token_answers_nobody_else(hub, tmp_path):
    assert hub.endpoint.startswith("http://127.0.0.1:") and hub.state.token  # the default: a random token
    (tmp_path / "w.safetensors").write_bytes(b"\0" * 100)
    push_folder(tmp_path, "tester/private")  # the client holds the token (HF_TOKEN inside the block)
    for path in ("/api/models/tester/private", "/tester/private/resolve/main/w.safetensors", "/api/whoami-v2"):
        assert request(hub, "GET", path)[0] == 200
        assert request(hub, "GET", path, token=None)[0] == 401
        assert request(hub, "GET", path, token="hf_guess")[0] == 401
    data = b"new content"
    oid = hashlib.sha256(data).hexdigest()
    assert request(hub, "PUT", f"/__lfs/{oid}", data, token=None)[0] == 403  # an upload URL without its signature
    assert request(hub, "PUT", f"/__lfs/{oid}?signature={'0' * 64}", data, token=None)[0] == 403
    assert not hub.state.blob_path(oid).exists()
    with pytest.raises(HfHubHTTPError, match="401"):
        HfApi(token="hf_guess").list_repo_files("tester/private")


def test_an_open_server_is_opt_in(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with LoopbackHub(token=None) as hub:
        push_folder(tmp_path, "tester/open")
        assert request(hub, "GET", "/api/models/tester/open", token=None)[0] == 200
        content = base64.b64encode(b"y").decode()
        lines = [
            {"key": "header", "value": {"summary": "s"}},
            {"key": "file", "value": {"path": "g", "content": content}},
        ]
        body = "\n".join(json.dumps(line) for line in lines)
        assert request(hub, "POST", "/api/models/tester/open/commit/main", body.encode(), token=None)[0] == 200
