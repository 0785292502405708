"""`LoopbackHub`: run the Hub-compatible server on 127.0.0.1 and point `huggingface_hub` at it."""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
from pathlib import Path

from huggingface_hub import constants, hf_api

from .hub_server import HubState, _HubHTTPServer

# Environment a subprocess needs to talk to the loopback Hub (huggingface_hub reads it at import time).
_ENV_KEYS = ("HF_ENDPOINT", "HF_HUB_DISABLE_XET", "HF_HUB_OFFLINE", "HF_TOKEN")
# `LoopbackHub(token=RANDOM_TOKEN)`, the default: a fresh random token per server.
RANDOM_TOKEN = object()


class LoopbackHub:
    """A Hub on 127.0.0.1 for tests and demos; nothing leaves the machine.

    Inside `with LoopbackHub() as hub:` the real `huggingface_hub` client (and transformers / peft on top of it)
    uses `hub.endpoint`: `HF_ENDPOINT` is set for subprocesses and the already-imported client is pointed there
    too. Xet uploads are turned off, as the server speaks the commit + Git LFS protocol.

    Args:
        storage: folder for the blobs; a temporary one (removed on exit) by default.
        token: every request must carry `Authorization: Bearer <token>`; by default a random token, which the
            client gets through `HF_TOKEN` inside the block (`hub.env` for subprocesses). `None` serves anyone on
            this machine.
    """

    def __init__(self, storage: str | os.PathLike | None = None, token: str | object | None = RANDOM_TOKEN):
        token = f"hf_loopback_{secrets.token_hex(16)}" if token is RANDOM_TOKEN else token
        self._tmp = tempfile.TemporaryDirectory(prefix="loopback-hub-") if storage is None else None
        self.state = HubState(Path(storage or self._tmp.name), token=token)
        self._server = _HubHTTPServer(("127.0.0.1", 0), self.state)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._saved_env: dict[str, str | None] = {}
        self._saved_constants: dict[str, object] = {}

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that make a subprocess use this Hub."""
        env = {"HF_ENDPOINT": self.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
        return {**env, "HF_TOKEN": self.state.token} if self.state.token else env

    def __enter__(self) -> LoopbackHub:
        threading.Thread(target=self._server.serve_forever, name="loopback-hub", daemon=True).start()
        self._saved_env = {key: os.environ.get(key) for key in _ENV_KEYS}
        os.environ.pop("HF_TOKEN", None)  # a real token of the user's is never sent to this server
        os.environ.update(self.env)
        patched = {
            "ENDPOINT": self.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": self.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_DISABLE_XET": True,
            "HF_HUB_OFFLINE": False,
        }
        self._saved_constants = {name: getattr(constants, name) for name in patched}
        for name, value in patched.items():
            setattr(constants, name, value)
        # Module-level helpers such as `huggingface_hub.file_exists` are bound to an HfApi made at import time.
        self._saved_api_endpoint, hf_api.api.endpoint = hf_api.api.endpoint, self.endpoint
        return self

    def __exit__(self, *exc) -> None:
        hf_api.api.endpoint = self._saved_api_endpoint
        for name, value in self._saved_constants.items():
            setattr(constants, name, value)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._server.shutdown()
        self._server.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()
