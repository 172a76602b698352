"""An EC2 stand-in for the benchmarks: DescribeInstances over the EC2 Query API, throttled like
AWS, counting every call.

Run: `.venv/bin/python bench/ec2_standin.py [--port 0] [--burst 50] [--rate 10] [--latency-ms 0]`
(the first line printed is `listening on http://127.0.0.1:PORT`). The server under test reaches
it through `AWS_ENDPOINT_URL_EC2`; signatures are not checked.

What it does, and why each part is there:
* `POST /` with `Action=DescribeInstances` and `InstanceId.N` answers the XML AWS answers
  (`DescribeInstancesResponse`, one reservation per instance, `instanceState` code and name),
  so botocore parses it exactly as it parses AWS;
* like AWS, one unknown id fails the whole call with HTTP 400 `InvalidInstanceID.NotFound`
  naming every unknown id, which is what the server's batching has to cope with;
* a token bucket (`--burst` tokens, refilled at `--rate` a second; AWS's bucket for
  DescribeInstances is 50 and 10) takes one token per call; an empty bucket answers HTTP 503
  `RequestLimitExceeded`, which botocore retries with backoff like the real thing.
  `--burst 0` switches throttling off;
* `--latency-ms` holds each answered call that long, as AWS's round trip would;
* `POST /_standin/instances` with `{"running": [...], "stopped": [...]}` says which instances
  exist; `GET /_standin/stats` returns the counters as JSON; `POST /_standin/reset` zeroes them
  and refills the bucket.
Only 127.0.0.1 is served.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
STATE_CODES = {"pending": 0, "running": 16, "stopping": 64, "stopped": 80, "terminated": 48}
OWNER = "123456789012"


class TokenBucket:
    """AWS's request-token bucket: `capacity` at most, `rate` tokens back per second."""

    def __init__(self, capacity: int, rate: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self._tokens = float(capacity)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """One token if there is one; False means the call is throttled."""
        if self.capacity <= 0:
            return True
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    def refill(self) -> None:
        with self._lock:
            self._tokens = float(self.capacity)
            self._at = time.monotonic()


class StandIn:
    """The instances, the bucket and the counters the handler shares."""

    def __init__(self, bucket: TokenBucket, latency: float) -> None:
        self.bucket = bucket
        self.latency = latency
        self.states: dict[str, str] = {}
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.calls = 0  # every DescribeInstances request received, throttled ones included
            self.answered = 0
            self.throttled = 0
            self.not_found = 0
            self.ids_asked = 0
            self.max_ids = 0
            self.sizes: list[int] = []  # ids per answered call, in order
            self.first_call: float | None = None
            self.last_call: float | None = None
        self.bucket.refill()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            span = (self.last_call - self.first_call) if self.first_call and self.last_call else 0
            return {
                "describe_calls": self.calls,
                "answered": self.answered,
                "throttled": self.throttled,
                "not_found": self.not_found,
                "ids_asked": self.ids_asked,
                "max_ids_per_call": self.max_ids,
                "ids_per_answered_call": list(self.sizes),
                "seconds_first_to_last_call": round(span, 3),
                "instances": len(self.states),
            }


def _error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}"
        f"</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


def _instance_xml(instance_id: str, state: str) -> str:
    return (
        f"<item><reservationId>r-{instance_id[2:]}</reservationId><ownerId>{OWNER}</ownerId>"
        "<groupSet/><instancesSet><item>"
        f"<instanceId>{escape(instance_id)}</instanceId><imageId>ami-0fa9e1f64142cde17</imageId>"
        f"<instanceState><code>{STATE_CODES.get(state, 0)}</code><name>{escape(state)}</name>"
        "</instanceState><instanceType>t3.micro</instanceType>"
        "<placement><availabilityZone>us-west-2a</availabilityZone></placement>"
        "</item></instancesSet></item>"
    )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    # Headers and body leave in two writes; with Nagle's algorithm the body would wait for the
    # client's delayed ACK (40 ms), which AWS does not make anyone wait.
    disable_nagle_algorithm = True
    server_version = "ec2-standin"
    standin: StandIn

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a burst would print a line per call."""

    def _send(self, status: int, body: bytes, content_type: str = "text/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        if self.path == "/_standin/stats":
            self._send(200, json.dumps(self.standin.stats()).encode(), "application/json")
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/_standin/reset":
            self.standin.reset()
            self._send(200, b"{}", "application/json")
        elif self.path == "/_standin/instances":
            data = json.loads(body or b"{}")
            with self.standin.lock:
                for state in ("running", "stopped", "terminated", "pending"):
                    for instance_id in data.get(state, []):
                        self.standin.states[instance_id] = state
            self._send(200, b"{}", "application/json")
        else:
            self._query(parse_qs(body.decode()))

    def _query(self, form: dict[str, list[str]]) -> None:
        action = form.get("Action", [""])[0]
        if action != "DescribeInstances":
            self._send(400, _error("InvalidAction", f"The action {action} is not valid"))
            return
        standin = self.standin
        ids = [values[0] for key, values in sorted(form.items()) if key.startswith("InstanceId.")]
        now = time.monotonic()
        with standin.lock:
            standin.calls += 1
            standin.ids_asked += len(ids)
            standin.max_ids = max(standin.max_ids, len(ids))
            standin.first_call = standin.first_call or now
            standin.last_call = now
        if not standin.bucket.take():
            with standin.lock:
                standin.throttled += 1
            self._send(503, _error("RequestLimitExceeded", "Request limit exceeded."))
            return
        if standin.latency:
            time.sleep(standin.latency)
        with standin.lock:
            unknown = [i for i in ids if i not in standin.states]
            states = {i: standin.states.get(i, "") for i in ids}
            if unknown:
                standin.not_found += 1
            else:
                standin.answered += 1
                standin.sizes.append(len(ids))
        if unknown:
            if len(unknown) > 1:
                message = f"The instance IDs '{', '.join(unknown)}' do not exist"
            else:
                message = f"The instance ID '{unknown[0]}' does not exist"
            self._send(400, _error("InvalidInstanceID.NotFound", message))
            return
        items = "".join(_instance_xml(i, states[i]) for i in dict.fromkeys(ids))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<DescribeInstancesResponse xmlns="{NAMESPACE}">'
            f"<requestId>{uuid.uuid4()}</requestId><reservationSet>{items}</reservationSet>"
            "</DescribeInstancesResponse>"
        ).encode()
        self._send(200, body)


def serve(port: int, burst: int, rate: float, latency: float) -> ThreadingHTTPServer:
    """A started server (in a thread) on 127.0.0.1:`port` (0: any free port)."""
    handler = type(
        "BoundHandler", (Handler,), {"standin": StandIn(TokenBucket(burst, rate), latency)}
    )
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    threading.Thread(target=server.serve_forever, name="ec2-standin", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--burst", type=int, default=50, help="bucket size; 0: no throttling")
    parser.add_argument("--rate", type=float, default=10, help="tokens refilled per second")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay of each answer")
    args = parser.parse_args(argv)
    server = serve(args.port, args.burst, args.rate, args.latency_ms / 1000)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
