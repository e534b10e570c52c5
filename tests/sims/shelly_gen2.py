#!/usr/bin/env python3
"""A simulated Shelly Gen2 relay with power metering (a Plus 1PM by default), for the
shelly_gen2 driver's end-to-end tests. Standard library only; listens on 127.0.0.1 only.

Written from Shelly's published Gen2 API documentation (shelly-api-docs.shelly.cloud:
"RPC Channels", "Authentication", "Common Errors", the Shelly service and the Switch
component), not from the driver:

- RPC over HTTP: ``GET /rpc/<Method>?<params>`` with the parameters in the query string
  (``true``/``false`` and numbers are typed, anything else is a string; a quoted value is a
  string), ``POST /rpc/<Method>`` with the parameters as a JSON object, and ``POST /rpc``
  with a whole request frame. The first two answer the method's ``result`` object alone, or
  its error object ``{"code": ..., "message": ...}``; ``POST /rpc`` answers a response
  frame (``id``, ``src``, ``result`` or ``error``). ``GET /shelly`` answers the device
  info. Responses close the connection, as the devices do (no keep-alive on the HTTP
  channel).
- Methods: ``Shelly.GetDeviceInfo``, ``Shelly.GetStatus``, ``Shelly.ListMethods``,
  ``Switch.GetStatus``, ``Switch.Set`` (``id``, ``on``, optional ``toggle_after`` in
  seconds), ``Switch.Toggle``, ``Switch.GetConfig``.
- Errors: -103 invalid argument (a missing or mistyped parameter), -105 not found (a
  switch id the device does not have), 404 for an unknown method. The documentation gives
  the codes but not the HTTP status of an error response; this simulator answers 400 for
  -103, 404 for -105 and unknown methods, and 500 otherwise.
- Authentication (``--password``): every call but ``Shelly.GetDeviceInfo`` and
  ``/shelly`` needs HTTP digest authentication as in RFC 7616 with SHA-256: user
  ``admin``, realm the device id, ``qop="auth"``. A 401 carries
  ``WWW-Authenticate: Digest qop="auth", realm="<id>", nonce="<n>", algorithm=SHA-256``.
  ``HA1 = SHA-256(admin:<realm>:<password>)``, ``HA2 = SHA-256(<method>:<uri>)``,
  ``response = SHA-256(HA1:nonce:nc:cnonce:auth:HA2)``. A nonce is valid for an hour and
  may be reused with an increasing ``nc`` (firmware 2.0 behaviour); a repeated or smaller
  ``nc`` is refused.
- Metering: while on, the output draws ``--load-watts`` at ``--voltage``; the energy
  counter (``aenergy.total``, Wh) grows with time.

    python3 shelly_gen2.py --port 8080 [--password SECRET] [--switches 1]
        [--device-id shellyplus1pm-a8032ab12345] [--load-watts 60.5] [--voltage 230.1]
"""
import argparse
import hashlib
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

UNPROTECTED = {"Shelly.GetDeviceInfo"}
NONCE_LIFETIME_S = 3600


class RpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    def http_status(self):
        return {-103: 400, -105: 404, 404: 404}.get(self.code, 500)


class Switch:
    def __init__(self, ident, options):
        self.id = ident
        self.options = options
        self.output = False
        self.source = "init"
        self.energy_wh = 0.0
        self.since = time.monotonic()
        self.timer = None
        self.timer_started_at = None
        self.timer_duration = None

    def _account(self):
        now = time.monotonic()
        if self.output:
            self.energy_wh += self.options.load_watts * (now - self.since) / 3600.0
        self.since = now

    def set(self, on, source, toggle_after=None):
        self._account()
        was_on = self.output
        self.output = on
        self.source = source
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.timer_started_at = self.timer_duration = None
        if toggle_after is not None:
            self.timer_started_at = round(time.time(), 2)
            self.timer_duration = toggle_after
            self.timer = threading.Timer(toggle_after, self._flip_back)
            self.timer.daemon = True
            self.timer.start()
        return was_on

    def _flip_back(self):
        with self.options.lock:
            self.timer = None
            self.timer_started_at = self.timer_duration = None
            self._account()
            self.output = not self.output
            self.source = "timer"

    def status(self):
        self._account()
        watts = self.options.load_watts if self.output else 0.0
        volts = self.options.voltage
        celsius = 41.7 + (4.0 if self.output else 0.0)
        status = {
            "id": self.id,
            "source": self.source,
            "output": self.output,
            "apower": round(watts, 1),
            "voltage": round(volts, 1),
            "freq": 50.0,
            "current": round(watts / volts, 3) if volts else 0.0,
            "aenergy": {
                "total": round(self.energy_wh, 3),
                "by_minute": [0.0, 0.0, 0.0],
                "minute_ts": int(time.time()) // 60 * 60,
            },
            "temperature": {"tC": round(celsius, 1), "tF": round(celsius * 9 / 5 + 32, 1)},
        }
        if self.timer_started_at is not None:
            status["timer_started_at"] = self.timer_started_at
            status["timer_duration"] = self.timer_duration
        return status

    def config(self):
        return {
            "id": self.id,
            "name": None,
            "in_mode": "follow",
            "initial_state": "match_input",
            "auto_on": False,
            "auto_on_delay": 60.0,
            "auto_off": False,
            "auto_off_delay": 60.0,
            "power_limit": 4480,
            "voltage_limit": 280,
            "current_limit": 16.0,
        }


class Device:
    def __init__(self, options):
        self.options = options
        options.lock = threading.Lock()
        self.lock = options.lock
        self.switches = [Switch(i, options) for i in range(options.switches)]
        self.nonces = {}  # nonce -> (issued at, highest nc seen)

    # --- the RPC methods ---------------------------------------------------------------

    def info(self):
        mac = self.options.device_id.rsplit("-", 1)[-1].upper()
        auth = self.options.password is not None
        return {
            "name": None,
            "id": self.options.device_id,
            "mac": mac,
            "slot": 0,
            "model": self.options.model,
            "gen": 2,
            "fw_id": "20241011-114455/1.4.4-g6d2a586",
            "ver": "1.4.4",
            "app": self.options.app,
            "auth_en": auth,
            "auth_domain": self.options.device_id if auth else None,
        }

    def switch(self, params):
        if "id" not in params:
            raise RpcError(-103, "Missing required 'id'")
        ident = params["id"]
        if not isinstance(ident, int) or isinstance(ident, bool):
            raise RpcError(-103, "Argument 'id', expected number")
        if not 0 <= ident < len(self.switches):
            raise RpcError(-105, f"Argument 'id', value {ident} not found!")
        return self.switches[ident]

    def call(self, method, params):
        with self.lock:
            if method == "Shelly.GetDeviceInfo":
                return self.info()
            if method == "Shelly.ListMethods":
                return {"methods": sorted(METHODS)}
            if method == "Shelly.GetStatus":
                result = {f"switch:{s.id}": s.status() for s in self.switches}
                result["sys"] = {"mac": self.info()["mac"], "restart_required": False}
                return result
            if method == "Switch.GetStatus":
                return self.switch(params).status()
            if method == "Switch.GetConfig":
                return self.switch(params).config()
            if method == "Switch.Set":
                switch = self.switch(params)
                on = params.get("on")
                if not isinstance(on, bool):
                    raise RpcError(-103, "Missing required 'on'" if on is None
                                   else "Argument 'on', expected boolean")
                toggle_after = params.get("toggle_after")
                if toggle_after is not None and (
                        isinstance(toggle_after, bool)
                        or not isinstance(toggle_after, (int, float)) or toggle_after <= 0):
                    raise RpcError(-103, "Argument 'toggle_after', expected positive number")
                return {"was_on": switch.set(on, "http", toggle_after)}
            if method == "Switch.Toggle":
                switch = self.switch(params)
                return {"was_on": switch.set(not switch.output, "http")}
            raise RpcError(404, f"No handler for {method}")

    # --- digest authentication ---------------------------------------------------------

    def challenge(self):
        nonce = str(int(time.time())) + secrets.token_hex(4)
        with self.lock:
            now = time.monotonic()
            self.nonces = {n: v for n, v in self.nonces.items()
                           if now - v[0] < NONCE_LIFETIME_S}
            self.nonces[nonce] = (now, 0)
        return (f'Digest qop="auth", realm="{self.options.device_id}", '
                f'nonce="{nonce}", algorithm=SHA-256')

    def authorized(self, method, header):
        if self.options.password is None:
            return True
        if not header or not header.lower().startswith("digest "):
            return False
        fields = dict(
            (key.lower(), quoted if quoted else plain)
            for key, quoted, plain in re.findall(
                r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))', header[7:]))
        sha = lambda text: hashlib.sha256(text.encode()).hexdigest()
        try:
            if fields.get("username") != "admin" or fields["realm"] != self.options.device_id:
                return False
            if fields.get("algorithm", "MD5").upper() != "SHA-256" or fields["qop"] != "auth":
                return False
            nonce, nc = fields["nonce"], int(fields["nc"], 16)
            ha1 = sha(f"admin:{self.options.device_id}:{self.options.password}")
            ha2 = sha(f"{method}:{fields['uri']}")
            expected = sha(f"{ha1}:{nonce}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
        except (KeyError, ValueError):
            return False
        if not secrets.compare_digest(expected, fields.get("response", "")):
            return False
        with self.lock:
            issued = self.nonces.get(nonce)
            if issued is None or time.monotonic() - issued[0] >= NONCE_LIFETIME_S:
                return False
            if nc <= issued[1]:
                return False  # a replayed request
            self.nonces[nonce] = (issued[0], nc)
        return True


METHODS = {"Shelly.GetDeviceInfo", "Shelly.GetStatus", "Shelly.ListMethods",
           "Switch.GetStatus", "Switch.GetConfig", "Switch.Set", "Switch.Toggle"}


def query_value(text):
    """A GET parameter as the device reads it: true/false and numbers are typed, a quoted
    value is a string, anything else is a string."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ShellyHTTP/1.0"

    def log_message(self, format, *args):  # quiet
        pass

    def send(self, status, body, extra=()):
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def authorized(self, method=None):
        """Whether the request may go on; if not, the 401 challenge has been sent."""
        device = self.server.device
        if method in UNPROTECTED or device.authorized(
                self.command, self.headers.get("Authorization")):
            return True
        self.send(401, None, [("WWW-Authenticate", device.challenge())])
        return False

    def dispatch(self, method, params, frame=None):
        device = self.server.device
        if not self.authorized(method):
            return
        try:
            result = device.call(method, params)
        except RpcError as error:
            payload = {"code": error.code, "message": error.message}
            if frame is not None:
                self.send(200, {"id": frame.get("id"), "src": device.options.device_id,
                                "dst": frame.get("src"), "error": payload})
            else:
                self.send(error.http_status(), payload)
            return
        if frame is not None:
            self.send(200, {"id": frame.get("id"), "src": device.options.device_id,
                            "dst": frame.get("src"), "result": result})
        else:
            self.send(200, result)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/shelly":
            info = self.server.device.info()
            self.send(200, info)
            return
        if not url.path.startswith("/rpc/"):
            self.send(404, None)
            return
        params = {key: query_value(value)
                  for key, value in parse_qsl(url.query, keep_blank_values=True)}
        self.dispatch(url.path[len("/rpc/"):], params)

    def do_POST(self):
        url = urlsplit(self.path)
        try:
            payload = json.loads(self.body() or b"{}")
        except ValueError:
            if self.authorized():
                self.send(400, {"code": -103, "message": "Invalid JSON"})
            return
        if url.path == "/rpc":
            if not isinstance(payload, dict) or "method" not in payload:
                # Clients probing for the challenge send no body.
                if self.authorized():
                    self.send(400, {"code": -103, "message": "Invalid request frame"})
                return
            self.dispatch(payload["method"], payload.get("params") or {}, frame=payload)
        elif url.path.startswith("/rpc/"):
            self.dispatch(url.path[len("/rpc/"):], payload if isinstance(payload, dict) else {})
        else:
            self.send(404, None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--password", help="turn authentication on with this password")
    parser.add_argument("--device-id", default="shellyplus1pm-a8032ab12345")
    parser.add_argument("--model", default="SNSW-001P16EU")
    parser.add_argument("--app", default="Plus1PM")
    parser.add_argument("--switches", type=int, default=1)
    parser.add_argument("--load-watts", type=float, default=60.5)
    parser.add_argument("--voltage", type=float, default=230.1)
    options = parser.parse_args()
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    with ThreadingHTTPServer(("127.0.0.1", options.port), Handler) as server:
        server.device = Device(options)
        server.serve_forever()


if __name__ == "__main__":
    main()
