"""A stand-in for the migration appliance (VMA) progress API, for the lab.

It behaves as the seed's appliance does (DRDAVIDBANNER/sendense at 8b7d59b,
source/current/vma/api/progress_handler.go and
source/current/vma/services/progress_service.go; see
docs/vma-progress-api.md):

  POST /api/v1/progress/{job_id}/update
      The body is read as the appliance's Go decoder reads it into its
      ProgressUpdate struct: stage, status, bytes_transferred, total_bytes,
      throughput_bps, percent, disk_id, sync_type; keys matched
      case-insensitively, unknown fields (error_message too: the appliance
      has no field for it) ignored, a field of the wrong type or a body that
      is not JSON answered 400 "invalid request body: ..." (plain text).
      The job is created on its first update (answer 200 {"status":
      "success", "auto_initialized": true, "job_id": ...}; later updates
      {"status": "success", "job_id": ...}). Stage and status are stored as
      given (non-empty ones). With disk_id, the disk is created on first
      sight (its planned bytes are total_bytes), then bytes_transferred and
      total_bytes are taken when > 0 and throughput_bps when >= 0, and the
      job's aggregate is the sum over its disks; without disk_id the update
      sets the aggregate directly (same rules, percent when > 0).
  GET  /api/v1/progress/{job_id}
      The job in the appliance's VMAProgressResponse shape: job_id, status,
      sync_type, phase, percentage, current_operation, bytes_transferred,
      total_bytes, throughput, timing, vm_info, phases, errors, last_error,
      disk_progresses (absent until a disk was named). 404 "job not found".
  Errors are plain-text bodies, as Go's http.Error writes them.

Lab additions (not the appliance's): every update received (valid or not,
whatever the mode) is appended to a JSON-lines log with its receive time and
the body as sent, for assertions; an optional bearer token (401
"unauthorized: ..."); and the control routes below (no auth, loopback only):
  GET  /_lab/mode                  {"mode": ..., "stall_seconds": ...}
  POST /_lab/mode                  {"mode": "ok"|"fail"|"stall", "stall_seconds": 30}
  GET  /_lab/updates               every logged update (JSON list)
  POST /_lab/reset                 forget jobs and truncate the log
Modes: ok (normal), fail (updates answer 500 "failed to update progress:
..."), stall (every API request is held stall_seconds before being
answered; other connections are served meanwhile). "Down" is stopping the
process.

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
from urllib.parse import unquote

MODES = ("ok", "fail", "stall")
MiB = 1024 * 1024
GiB = 1024 * MiB
INT64 = (-(1 << 63), (1 << 63) - 1)

UPDATE_RE = re.compile(r"^/api/v1/progress/([^/]+)/update/?$")
JOB_RE = re.compile(r"^/api/v1/progress/([^/]+)/?$")

# The appliance's ProgressUpdate struct (progress_handler.go): JSON name -> Go type.
UPDATE_FIELDS = (
    ("stage", "progress.ReplicationStage"),
    ("status", "progress.ReplicationStatus"),
    ("bytes_transferred", "int64"),
    ("total_bytes", "int64"),
    ("throughput_bps", "int64"),
    ("percent", "float64"),
    ("disk_id", "string"),
    ("sync_type", "string"),
)
# The appliance's own names (vma/progress): a new job is Discover/Queued, a
# new disk "Streaming"; ETA and current_operation compare with these.
STATUS_SUCCEEDED, STATUS_FAILED = "Succeeded", "Failed"
OPERATIONS = {
    "Discover": "Discovering VM", "EnableCBT": "Enabling CBT", "QueryCBT": "Querying CBT",
    "Snapshot": "Creating Snapshot", "PrepareVolumes": "Preparing Volumes", "StartExports": "Starting Exports",
    "Transfer": "Transferring Data", "Finalize": "Finalizing", "PersistChangeIDs": "Persisting Change IDs",
}


def _now_iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _rfc3339(ts):
    """Go's time.RFC3339 (seconds), in UTC."""
    return datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class BadBody(ValueError):
    """The body cannot be decoded into the appliance's ProgressUpdate (its text is the Go error's gist)."""


class _Float(float):
    """A JSON number with a fraction or an exponent (Go refuses it for an int64 field)."""


def decode_update(raw):
    """The update the appliance would decode from ``raw`` (bytes): a dict of the known fields.

    Absent and null fields are the Go zero values; raises BadBody as the
    appliance's decoder fails (its message follows Go's wording).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("invalid character in the body (not UTF-8)")
    text = text.lstrip(" \t\r\n")
    if not text:
        raise BadBody("EOF")
    try:
        # Go's Decoder reads the first JSON value and ignores what follows.
        value, _end = json.JSONDecoder(parse_float=_Float).raw_decode(text)
    except ValueError as exc:
        raise BadBody(str(exc))
    update = {"stage": "", "status": "", "bytes_transferred": 0, "total_bytes": 0, "throughput_bps": 0,
              "percent": 0.0, "disk_id": "", "sync_type": ""}
    if value is None:
        return update
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else ("string" if isinstance(value, str) else
                                                        ("bool" if isinstance(value, bool) else "number"))
        raise BadBody("json: cannot unmarshal %s into Go value of type api.ProgressUpdate" % kind)
    error = None
    types = dict(UPDATE_FIELDS)
    for key, item in value.items():
        # encoding/json matches a key to a field exactly or case-insensitively.
        name = key if key in types else next((n for n in types if n.lower() == key.lower()), None)
        if name is None or item is None:
            continue
        go_type = types[name]
        ok = False
        if go_type == "int64":
            ok = isinstance(item, int) and not isinstance(item, bool) and INT64[0] <= item <= INT64[1]
        elif go_type == "float64":
            ok = isinstance(item, (int, float)) and not isinstance(item, bool)
            item = float(item) if ok else item
        else:
            ok = isinstance(item, str)
        if ok:
            update[name] = item
        elif error is None:
            kind = ("string" if isinstance(item, str) else "bool" if isinstance(item, bool) else
                    "array" if isinstance(item, list) else "object" if isinstance(item, dict) else
                    "number %s" % json.dumps(item))
            error = "json: cannot unmarshal %s into Go struct field ProgressUpdate.%s of type %s" % (kind, name, go_type)
    if error:
        raise BadBody(error)
    return update


def _new_job(job_id, ts):
    # InitializeJobWithNBDExport: Discover/Queued, no sync type yet.
    aggregate = {"total_bytes": 0, "bytes_transferred": 0, "throughput_bps": 0, "percent": 0.0}
    return {"job_id": job_id, "stage": "Discover", "status": "Queued", "started_at": ts, "updated_at": ts,
            "cbt_type": "", "aggregate": aggregate, "disks": []}


def apply_update(job, update, ts):
    """UpdateJobProgressFromMigratekit: ``update`` (from :func:`decode_update`) into ``job``."""
    if update["stage"]:
        job["stage"] = update["stage"]
    if update["status"]:
        job["status"] = update["status"]
    if update["sync_type"] in ("full", "initial"):
        job["cbt_type"] = "full"
    elif update["sync_type"] == "incremental":
        job["cbt_type"] = "incremental"
    if update["disk_id"]:
        disk = next((d for d in job["disks"] if d["id"] == update["disk_id"]), None)
        if disk is None:
            disk = {"id": update["disk_id"], "label": "Disk %s" % update["disk_id"],
                    "planned_bytes": update["total_bytes"], "bytes_transferred": 0, "throughput_bps": 0,
                    "percent": 0.0, "status": "Streaming"}
            job["disks"].append(disk)
        if update["bytes_transferred"] > 0:
            disk["bytes_transferred"] = update["bytes_transferred"]
        if update["total_bytes"] > 0:
            disk["planned_bytes"] = update["total_bytes"]
        if update["throughput_bps"] >= 0:
            disk["throughput_bps"] = update["throughput_bps"]
        if disk["planned_bytes"] > 0:
            disk["percent"] = float(disk["bytes_transferred"]) / float(disk["planned_bytes"]) * 100.0
        agg = job["aggregate"]
        agg["bytes_transferred"] = sum(d["bytes_transferred"] for d in job["disks"])
        agg["total_bytes"] = sum(d["planned_bytes"] for d in job["disks"])
        agg["throughput_bps"] = sum(d["throughput_bps"] for d in job["disks"])
        if agg["total_bytes"] > 0:
            agg["percent"] = float(agg["bytes_transferred"]) / float(agg["total_bytes"]) * 100.0
    else:
        agg = job["aggregate"]
        if update["bytes_transferred"] > 0:
            agg["bytes_transferred"] = update["bytes_transferred"]
        if update["total_bytes"] > 0:
            agg["total_bytes"] = update["total_bytes"]
        if update["throughput_bps"] >= 0:
            agg["throughput_bps"] = update["throughput_bps"]
        if update["percent"] > 0:
            agg["percent"] = update["percent"]
        elif agg["total_bytes"] > 0:
            agg["percent"] = float(agg["bytes_transferred"]) / float(agg["total_bytes"]) * 100.0
    job["updated_at"] = ts
    return job


def _eta(job):
    agg = job["aggregate"]
    if job["status"] in (STATUS_SUCCEEDED, STATUS_FAILED):
        return 0
    if agg["percent"] <= 0 or agg["throughput_bps"] <= 0:
        return 0
    remaining = agg["total_bytes"] - agg["bytes_transferred"]
    if remaining <= 0:
        return 0
    return int(min(float(remaining) / float(agg["throughput_bps"]), 86400.0))


def _operation(stage, status):
    if status == STATUS_SUCCEEDED:
        return "Completed"
    if status == STATUS_FAILED:
        return "Failed"
    return OPERATIONS.get(stage, stage)


def progress_response(job, now):
    """convertToVMAProgressResponse: the GET answer (GetJobProgress stamps the copy's UpdatedAt with now)."""
    agg = job["aggregate"]
    elapsed_ms = int((now - job["started_at"]) * 1000)
    mbps = float(agg["throughput_bps"]) / MiB
    answer = {
        "job_id": job["job_id"],
        "status": job["status"],
        "sync_type": job["cbt_type"],
        "phase": job["stage"],
        "percentage": agg["percent"],
        "current_operation": _operation(job["stage"], job["status"]),
        "bytes_transferred": agg["bytes_transferred"],
        "total_bytes": agg["total_bytes"],
        "throughput": {"current_mbps": mbps, "average_mbps": mbps, "peak_mbps": mbps, "last_update": _rfc3339(now)},
        "timing": {"start_time": _rfc3339(job["started_at"]), "last_update": _rfc3339(now), "elapsed_ms": elapsed_ms,
                   "phase_start": _rfc3339(job["started_at"]), "phase_elapsed_ms": elapsed_ms,
                   "eta_seconds": _eta(job)},
        "vm_info": {"name": "unknown", "path": "unknown", "disk_size_gb": agg["total_bytes"] // GiB,
                    "disk_size_bytes": agg["total_bytes"], "cbt_enabled": job["cbt_type"] in ("full", "incremental")},
        "phases": [{"name": job["stage"], "status": job["status"], "start_time": _rfc3339(job["started_at"]),
                    "end_time": "", "duration_ms": elapsed_ms}],
        "errors": [],
        "last_error": None,
    }
    if job["disks"]:
        answer["disk_progresses"] = [
            {"disk_id": d["id"], "label": d["label"], "bytes_transferred": d["bytes_transferred"],
             "total_bytes": d["planned_bytes"], "percent": d["percent"],
             "throughput_mbps": float(d["throughput_bps"]) / MiB, "status": d["status"]}
            for d in job["disks"]]
    return answer


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

    def apply(self, job_id, update, ts):
        """Apply one decoded update; return True if it created the job."""
        with self.lock:
            created = job_id not in self.jobs
            if created:
                self.jobs[job_id] = _new_job(job_id, ts)
            apply_update(self.jobs[job_id], update, ts)
            return created

    def get_job(self, job_id):
        """The GET answer for ``job_id``, or None."""
        with self.lock:
            job = self.jobs.get(job_id)
            return progress_response(job, time.time()) if job is not None else None

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
        """A JSON answer (the appliance's successes, and the lab's own routes)."""
        self._write(code, json.dumps(obj).encode(), "application/json")

    def _error(self, code, text):
        """A plain-text error, as Go's http.Error writes it."""
        self._write(code, (text + "\n").encode(), "text/plain; charset=utf-8", nosniff=True)

    def _write(self, code, data, content_type, nosniff=False):
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            if nosniff:
                self.send_header("X-Content-Type-Options", "nosniff")
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
            return self._error(404, "404 page not found")
        self._stall()
        if not self._authorized():
            return self._error(401, "unauthorized: a valid bearer token is required")
        job = self.state.get_job(unquote(m.group(1)))
        if job is None:
            return self._error(404, "job not found")
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
            return self._error(404, "404 page not found")
        raw_job_id = m.group(1)
        job_id = unquote(raw_job_id)
        ts = time.time()
        mode = self.state.mode
        try:
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            body = None
        update = None
        authorized = self._authorized()
        if not authorized:
            code, error = 401, "unauthorized: a valid bearer token is required"
        else:
            try:
                update = decode_update(raw)
            except BadBody as exc:
                code, error = 400, "invalid request body: %s" % exc
            else:
                if mode == "fail":
                    code, error = 500, "failed to update progress: the lab VMA is in fail mode"
                else:
                    code, error = 200, None
        entry = {
            "received_at": ts,
            "received_at_iso": _now_iso(ts),
            "job_id": raw_job_id,
            "mode": mode,
            "status_code": code,
            "authorized": authorized,
            "body": body,
        }
        if body is None and raw:
            entry["raw"] = raw.decode("utf-8", "replace")
        self.state.record(entry)
        self._stall()
        if code != 200:
            return self._error(code, error)
        answer = {"status": "success", "job_id": job_id}
        if self.state.apply(job_id, update, ts):
            answer["auto_initialized"] = True
        return self._send(200, answer)


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
