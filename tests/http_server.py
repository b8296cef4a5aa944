"""A loopback HTTP file server for download tests, with faults to inject on request."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Faults:
    cut: set[str] = field(default_factory=set)  # file names whose first transfer stops halfway
    fail_503: dict[str, int] = field(default_factory=dict)  # file name -> 503s before success
    ignore_range: bool = False  # answer every request with the whole file (200)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        root: Path = self.server.root
        faults: Faults = self.server.faults
        faults.requests.append((self.path, self.headers.get("Range")))
        name = self.path.rsplit("/", 1)[-1]
        if faults.fail_503.get(name, 0) > 0:
            faults.fail_503[name] -= 1
            self.send_error(503)
            return
        path = (root / self.path.lstrip("/")).resolve()
        if not path.is_file() or root not in path.parents:
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not faults.ignore_range:
            start = int(match[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in faults.cut:
            faults.cut.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class FileServer:
    """Serve `root` on 127.0.0.1 (a free port) in a thread; `url` is its base address."""

    def __init__(self, root: Path, faults: Faults | None = None):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.root = Path(root).resolve()
        self.httpd.faults = self.faults = faults or Faults()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
