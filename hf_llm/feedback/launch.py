"""Serving the pages: bound to 127.0.0.1 unless the user asks, on purpose, for more, and then only behind a login."""

from __future__ import annotations

import ipaddress
import os

from ..errors import UsageError


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1 or `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_auth_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """`user:password` pairs, one a line (blank lines and `#` comments ignored), for Gradio's login page.

    Raises:
        UsageError: when the file is missing, empty, or a line is not `user:password`.
    """
    if not os.path.isfile(path):
        raise UsageError(f"--auth_file {path} not found; write `user:password` lines to it (chmod 600)")
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, password = line.partition(":")
            if not sep or not user or not password:
                raise UsageError(f"{path}:{number} is not `user:password`; one login a line")
            pairs.append((user, password))
    if not pairs:
        raise UsageError(f"--auth_file {path} holds no `user:password` line")
    return pairs


def check_binding(host: str, allow_remote: bool, auth_file: str | None) -> None:
    """Refuse to serve beyond this machine unless `--allow_remote` and `--auth_file` are both given.

    Raises:
        UsageError: naming the flags to add (or the `--host` to drop).
    """
    if is_loopback(host):
        return
    if not allow_remote:
        raise UsageError(
            f"--host {host} would serve the page (and the model) to other machines. Keep the default --host "
            "127.0.0.1, or pass --allow_remote together with --auth_file FILE (`user:password` lines) to do it on "
            "purpose behind a login."
        )
    if not auth_file:
        raise UsageError(
            f"--allow_remote --host {host} needs --auth_file FILE (`user:password` lines): a page reachable from "
            "other machines must ask for a login."
        )


def serve(
    app,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    allow_remote: bool = False,
    auth_file: str | None = None,
    block: bool = True,
):
    """Launch a Gradio app after `check_binding`; one request at a time (one model, one labeler's file).

    Args:
        app (`gradio.Blocks`): from `build_ranking_app` or `build_chat_app`.
        host (`str`, defaults to `"127.0.0.1"`), port (`int`, defaults to 7860): where to listen.
        allow_remote (`bool`), auth_file (`str`, *optional*): see `check_binding`.
        block (`bool`, defaults to `True`): serve until interrupted; `False` returns once the server is up.
    """
    from .app import CSS

    check_binding(host, allow_remote, auth_file)
    auth = read_auth_file(auth_file) if auth_file else None
    app.queue(default_concurrency_limit=1)
    return app.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        share=False,
        css=CSS,
        show_error=True,
        prevent_thread_lock=not block,
        ssr_mode=False,
    )
