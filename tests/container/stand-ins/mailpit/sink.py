"""A Mailpit stand-in: accepts SMTP on :1025, lists what it got at GET /api/v1/messages on :8025."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

LOCK = threading.Lock()
MESSAGES: list[dict[str, Any]] = []


class Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        entry = {
            "From": {"Address": envelope.mail_from},
            "To": [{"Address": rcpt} for rcpt in envelope.rcpt_tos],
            "Subject": str(message.get("Subject", "")),
            "Size": len(envelope.content),
        }
        with LOCK:
            MESSAGES.append(entry)
        print(f"sink: {envelope.mail_from} -> {', '.join(envelope.rcpt_tos)}: {entry['Subject']}", flush=True)
        return "250 OK"


class Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/api/v1/messages":
            self.send_error(404)
            return
        with LOCK:
            body = json.dumps({"total": len(MESSAGES), "messages": list(reversed(MESSAGES))}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


if __name__ == "__main__":
    Controller(Sink(), hostname="0.0.0.0", port=1025).start()
    ThreadingHTTPServer(("0.0.0.0", 8025), Api).serve_forever()
