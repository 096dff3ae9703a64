"""A local HTTP receiver for webhook tests: records requests, answers as scripted."""

import json
import threading
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

from standardwebhooks import Webhook


class Receiver:
    """Serve on 127.0.0.1; answer each POST with the next scripted status (then 200)."""

    def __init__(self, statuses=(), headers=None, port=0):
        self.statuses = list(statuses)
        self.extra_headers = headers or {}
        self.requests = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append((self.path, dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                for name, value in receiver.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def verified(self, secret):
        """Return every body received, each verified with ``standardwebhooks``."""
        hook = Webhook(secret)
        found = []
        for _, headers, body in self.requests:
            lower = {k.lower(): v for k, v in headers.items()}
            found.append(hook.verify(body, lower))
            assert json.loads(body) == found[-1]
        return found
