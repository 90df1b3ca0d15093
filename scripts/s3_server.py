"""moto's S3 server for tests, with conditional writes made atomic.

Stock moto checks If-None-Match / If-Match and then writes without a lock, so two
racing conditional PUTs can both succeed (about 1 in 100), which breaks the Delta
commit protocol that real S3 and MinIO uphold. This launcher serialises every
conditional PUT/POST (and every copy that carries a condition) behind one lock.

Usage: python scripts/s3_server.py HOST PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

_LOCK = threading.Lock()
_CONDITIONS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH", "HTTP_X_AMZ_COPY_SOURCE_IF_NONE_MATCH")


def serialised(app):
    def wrapper(environ, start_response):
        conditional = environ.get("REQUEST_METHOD") in ("PUT", "POST") and any(
            k in environ for k in _CONDITIONS
        )
        if not conditional:
            return app(environ, start_response)
        with _LOCK:
            result = app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close:
                    close()
            return [body]

    return wrapper


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialised(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
