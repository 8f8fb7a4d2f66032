"""A stand-in for the migration appliance (VMA) progress API, for the lab.

API (see docs/ and DESIGN.md "The VMA progress API"):
  POST /api/v1/progress/{job_id}/update   JSON body; 200 {"status": "success", "job_id": ...}
                                           400/401 {"error": ..., "details": ...}
  GET  /api/v1/progress/{job_id}          the aggregated job; 404 {"error", "details"} when unknown

Every update received (valid or not, whatever the mode) is appended to a
JSON-lines log with its receive time, for assertions.

Lab control (no auth, loopback only):
  GET  /_lab/mode                  {"mode": ..., "stall_seconds": ...}
  POST /_lab/mode                  {"mode": "ok"|"fail"|"stall", "stall_seconds": 30}
  GET  /_lab/updates               every logged update (JSON list)
  POST /_lab/reset                 forget jobs and truncate the log
Modes: ok (normal), fail (updates answer 500), stall (every API request is
held stall_seconds before being answered; other connections are served
meanwhile). "Down" is stopping the process.

Usage: vma_receiver.py --log FILE [--host 127.0.0.1] [--port 0]
                       [--ready-file FILE] [--watch-pid PID]
A bearer token, when wanted, comes from the environment variable
VMA_RECEIVER_TOKEN (never argv).
"""

import argparse
import datetime
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STAGES = ("Discover", "Transfer", "Complete")
STATUSES = ("Queued", "Running", "Completed", "Failed")
SYNC_TYPES = ("full", "incremental")
NUMERIC = ("bytes_transferred", "total_bytes", "throughput_bps", "percent")
MODES = ("ok", "fail", "stall")

UPDATE_RE = re.compile(r"^/api/v1/progress/([^/]+)/update/?$")
JOB_RE = re.compile(r"^/api/v1/progress/([^/]+)/?$")


def _now_iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def validate_update(body):
    """Return (error, details) for an invalid update body, or None."""
    if not isinstance(body, dict):
        return ("invalid_request", "the body must be a JSON object")
    stage = body.get("stage")
    if stage not in STAGES:
        return ("invalid_stage", "stage must be one of %s, got %r" % (", ".join(STAGES), stage))
    status = body.get("status")
    if status not in STATUSES:
        return ("invalid_status", "status must be one of %s, got %r" % (", ".join(STATUSES), status))
    for name in NUMERIC:
        if name in body and body[name] is not None:
            v = body[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                return ("invalid_field", "%s must be a non-negative number, got %r" % (name, v))
    pct = body.get("percent")
    if isinstance(pct, (int, float)) and not isinstance(pct, bool) and pct > 100:
        return ("invalid_field", "percent must be between 0 and 100, got %r" % (pct,))
    if body.get("sync_type") is not None and body["sync_type"] not in SYNC_TYPES:
        return ("invalid_field", "sync_type must be one of %s, got %r" % (", ".join(SYNC_TYPES), body["sync_type"]))
    for name in ("disk_id", "message"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return ("invalid_field", "%s must be a string, got %r" % (name, body[name]))
    return None


class ReceiverState:
    def __init__(self, log_path, token=None):
        self.log_path = log_path
        self.token = token
        self.lock = threading.Lock()
        self.mode = "ok"
        self.stall_seconds = 30.0
        self.jobs = {}
        self.updates = []
        # Create (or keep) the log file.
        with open(self.log_path, "a"):
            pass

    def record(self, entry):
        with self.lock:
            self.updates.append(entry)
            with open(self.log_path, "a") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")

    def apply(self, job_id, body, ts):
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                job = {
                    "job_id": job_id,
                    "created_at": _now_iso(ts),
                    "update_count": 0,
                    "disks": {},
                }
                self.jobs[job_id] = job
            job["update_count"] += 1
            job["updated_at"] = _now_iso(ts)
            job["stage"] = body["stage"]
            job["status"] = body["status"]
            for k in ("sync_type", "message"):
                if body.get(k) is not None:
                    job[k] = body[k]
            job["last_update"] = dict(body)
            disk_id = body.get("disk_id")
            if disk_id:
                d = dict(body)
                d["updated_at"] = _now_iso(ts)
                job["disks"][disk_id] = d
            disks = list(job["disks"].values())
            if disks:
                job["bytes_transferred"] = sum(d.get("bytes_transferred") or 0 for d in disks)
                job["total_bytes"] = sum(d.get("total_bytes") or 0 for d in disks)
                job["throughput_bps"] = sum(d.get("throughput_bps") or 0 for d in disks
                                            if d.get("status") == "Running")
            else:
                for k in ("bytes_transferred", "total_bytes", "throughput_bps"):
                    if body.get(k) is not None:
                        job[k] = body[k]
            if job.get("total_bytes"):
                job["percent"] = round(100.0 * job.get("bytes_transferred", 0) / job["total_bytes"], 2)
            elif body.get("percent") is not None:
                job["percent"] = body["percent"]
            return job

    def get_job(self, job_id):
        with self.lock:
            job = self.jobs.get(job_id)
            return json.loads(json.dumps(job)) if job is not None else None

    def reset(self):
        with self.lock:
            self.jobs.clear()
            self.updates.clear()
            open(self.log_path, "w").close()


class Handler(BaseHTTPRequestHandler):
    server_version = "migratekit-lab-vma/1"
    protocol_version = "HTTP/1.1"
    # Keep-alive replies are small: without TCP_NODELAY each one waits ~40 ms
    # for the client's delayed ACK (Nagle), which would skew timing tests.
    disable_nagle_algorithm = True

    @property
    def state(self):
        return self.server.state

    def log_message(self, fmt, *args):  # quiet; the JSON log is the record
        if os.environ.get("VMA_RECEIVER_VERBOSE"):
            sys.stderr.write("vma_receiver: " + (fmt % args) + "\n")

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _authorized(self):
        if not self.state.token:
            return True
        return self.headers.get("Authorization", "") == "Bearer " + self.state.token

    def _stall(self):
        if self.state.mode == "stall":
            time.sleep(self.state.stall_seconds)

    # ------------------------------------------------------------ GET
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/_lab/mode":
            return self._send(200, {"mode": self.state.mode, "stall_seconds": self.state.stall_seconds})
        if path == "/_lab/updates":
            with self.state.lock:
                return self._send(200, list(self.state.updates))
        if path in ("/", "/healthz", "/_lab/health"):
            return self._send(200, {"status": "ok"})
        m = JOB_RE.match(path)
        if not m:
            return self._send(404, {"error": "not_found", "details": "no route for GET %s" % path})
        self._stall()
        if not self._authorized():
            return self._send(401, {"error": "unauthorized", "details": "a valid bearer token is required"})
        job = self.state.get_job(m.group(1))
        if job is None:
            return self._send(404, {"error": "job_not_found", "details": "no job with id %r" % m.group(1)})
        return self._send(200, job)

    # ------------------------------------------------------------ POST
    def do_POST(self):
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        if path == "/_lab/mode":
            try:
                req = json.loads(raw or b"{}")
                mode = req["mode"]
                if mode not in MODES:
                    raise ValueError(mode)
            except Exception:
                return self._send(400, {"error": "invalid_mode", "details": "mode must be one of %s" % ", ".join(MODES)})
            self.state.mode = mode
            if req.get("stall_seconds") is not None:
                self.state.stall_seconds = float(req["stall_seconds"])
            return self._send(200, {"mode": self.state.mode, "stall_seconds": self.state.stall_seconds})
        if path == "/_lab/reset":
            self.state.reset()
            return self._send(200, {"status": "reset"})
        m = UPDATE_RE.match(path)
        if not m:
            return self._send(404, {"error": "not_found", "details": "no route for POST %s" % path})
        job_id = m.group(1)
        ts = time.time()
        mode = self.state.mode
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
            parse_error = None if raw else "empty body"
        except (ValueError, UnicodeDecodeError) as e:
            body, parse_error = None, "invalid JSON: %s" % e
        authorized = self._authorized()
        if not authorized:
            code, answer = 401, {"error": "unauthorized", "details": "a valid bearer token is required"}
        elif parse_error:
            code, answer = 400, {"error": "invalid_json", "details": parse_error}
        else:
            invalid = validate_update(body)
            if invalid:
                code, answer = 400, {"error": invalid[0], "details": invalid[1]}
            elif mode == "fail":
                code, answer = 500, {"error": "internal_error", "details": "the lab VMA is in fail mode"}
            else:
                code, answer = 200, {"status": "success", "job_id": job_id}
        entry = {
            "received_at": ts,
            "received_at_iso": _now_iso(ts),
            "job_id": job_id,
            "mode": mode,
            "status_code": code,
            "authorized": authorized,
            "body": body,
        }
        if body is None and raw:
            entry["raw"] = raw.decode("utf-8", "replace")
        self.state.record(entry)
        self._stall()
        if code == 200:
            job = self.state.apply(job_id, body, ts)
            answer["stage"] = job["stage"]
            answer["job_status"] = job["status"]
        return self._send(code, answer)


class VMAReceiver:
    """The receiver as an object (also usable in-process: start()/stop())."""

    def __init__(self, log_path, host="127.0.0.1", port=0, token=None):
        self.state = ReceiverState(log_path, token=token)
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self.state
        self._thread = None

    @property
    def port(self):
        return self.httpd.server_address[1]

    @property
    def url(self):
        return "http://%s:%d" % (self.httpd.server_address[0], self.port)

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log", required=True, help="JSON-lines file of every update received")
    p.add_argument("--ready-file", help="written (JSON: url, port, pid) once listening")
    p.add_argument("--watch-pid", type=int, default=0, help="exit when this process is gone")
    p.add_argument("--mode", choices=MODES, default="ok")
    args = p.parse_args(argv)

    token = os.environ.pop("VMA_RECEIVER_TOKEN", None) or None
    rec = VMAReceiver(args.log, host=args.host, port=args.port, token=token)
    rec.state.mode = args.mode

    def _term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)

    if args.watch_pid:
        def _watch():
            while True:
                time.sleep(1)
                try:
                    os.kill(args.watch_pid, 0)
                except ProcessLookupError:
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                except PermissionError:
                    pass
        threading.Thread(target=_watch, daemon=True).start()

    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"url": rec.url, "port": rec.port, "pid": os.getpid()}, f)
        os.replace(tmp, args.ready_file)
    try:
        rec.httpd.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        rec.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
