#!/usr/bin/env python3
"""The token server of the local registry with `auth: token`: the
distribution spec's bearer-token flow, for testing skiff's pulls against it.

    token-server.py CONFIG

CONFIG (JSON): {"listen": "127.0.0.1:PORT", "key": KEY_PEM, "cert": CERT_PEM,
"password_file": FILE, "user": USER, "issuer": ISSUER, "service": SERVICE}.

`GET /token?service=...&scope=repository:<name>:pull` with basic auth (USER
and the password in FILE) answers `{"token", "access_token", "expires_in",
"issued_at"}`: a JWT (RS256, signed with KEY by the openssl command, the
certificate in its `x5c` header, which the registry checks against its
`rootcertbundle`) granting the scopes asked for. Wrong or no credentials:
401. Standard library only (and openssl), no secret on a command line.
"""

import base64
import datetime
import hmac
import json
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load(path):
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    with open(config["password_file"], encoding="utf-8") as f:
        config["password"] = f.read().strip()
    with open(config["cert"], encoding="utf-8") as f:
        pem = f.read()
    body = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))
    config["cert_der_b64"] = body
    return config


CONFIG = load(sys.argv[1])


def sign(signing_input):
    done = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", CONFIG["key"]],
        input=signing_input.encode(),
        capture_output=True,
        check=True,
    )
    return b64url(done.stdout)


def token_for(user, service, scopes):
    access = []
    for scope in scopes:
        parts = scope.split(":")
        if len(parts) == 3 and parts[0] == "repository":
            actions = [a for a in parts[2].split(",") if a in ("pull", "push")]
            access.append({"type": "repository", "name": parts[1], "actions": actions})
    now = int(time.time())
    header = {"typ": "JWT", "alg": "RS256", "x5c": [CONFIG["cert_der_b64"]]}
    claims = {
        "iss": CONFIG["issuer"],
        "sub": user,
        "aud": service,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "access": access,
    }
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    return signing_input + "." + sign(signing_input)


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="skiff-local-token"')
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/token":
            return self.answer(404, {"error": "not found"})
        query = parse_qs(url.query)
        auth = self.headers.get("Authorization", "")
        user, password = "", ""
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                pass
        if not (
            hmac.compare_digest(user.encode(), CONFIG["user"].encode())
            and hmac.compare_digest(password.encode(), CONFIG["password"].encode())
        ):
            return self.answer(401, {"error": "unauthorized"})
        service = query.get("service", [CONFIG["service"]])[0]
        token = token_for(user, service, query.get("scope", []))
        issued = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.answer(
            200,
            {"token": token, "access_token": token, "expires_in": 300, "issued_at": issued},
        )

    def log_message(self, fmt, *args):
        # The path and status only: never a header.
        sys.stderr.write("token-server: %s\n" % (fmt % args))


if __name__ == "__main__":
    host, port = CONFIG["listen"].rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
