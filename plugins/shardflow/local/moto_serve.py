"""The moto server the embedded default runs: moto's own app, with its DynamoDB writes one at a time.

Real DynamoDB applies a conditional write atomically; moto's threaded server checks the condition
and writes without a lock, so two racing transitions of one job could both win (seen in CI under
load). Serialising DynamoDB requests gives the job store the guarantee it relies on in AWS.

    python -m shardflow.local.moto_serve PORT
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

__all__ = ["SerialDynamoDB", "main"]


class SerialDynamoDB:
    """WSGI middleware: DynamoDB requests (``X-Amz-Target: DynamoDB_*``) run one at a time.

    :param app: the WSGI application to wrap.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))


def main(argv: list[str] | None = None) -> None:
    port = int((argv or sys.argv[1:])[0])
    os.environ.setdefault("MOTO_PORT", str(port))  # moto builds some of its URLs with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, SerialDynamoDB(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
