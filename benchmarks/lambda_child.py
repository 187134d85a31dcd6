"""A Lambda-like process for the cold-start and memory benchmarks. Stdlib only: it runs as
``python -S -P benchmarks/lambda_child.py`` with ``PYTHONPATH`` set as Lambda sets it (function code,
layer, runtime packages), so nothing else is importable, and nothing is imported before the handler.

It reads commands on stdin, one JSON line each, and answers each on the original stdout, one JSON line;
everything the function itself prints (its logs) goes to ``--log`` instead (its size is what
CloudWatch Logs would ingest). Commands:

* ``{"op": "import", "module": m}``: import the handler module, timed;
* ``{"op": "invoke", "event": e, "context": c, "reset_peak": bool, "record_calls": bool}``: call
  ``m.handler(e, context)``, timed, with the process's RSS before and its peak RSS during the call
  (``VmHWM``, reset first if asked) and, if asked, the AWS calls it made (``[service, operation]`` each, in
  order: noted by a wrapper on botocore's ``BaseClient._make_api_call`` when the handler has imported
  botocore; nothing is imported for it).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any


class Context:
    """The Lambda context object, as the handlers and Powertools read it."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.function_name = values.get("function_name", "function")
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(values.get("memory_limit_in_mb", 128))
        self.invoked_function_arn = values.get(
            "invoked_function_arn", f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        )
        self.aws_request_id = values.get("aws_request_id", "00000000-0000-0000-0000-000000000000")
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "bench"
        self._deadline = time.time() + float(values.get("timeout_seconds", 60))

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _status(name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key == name:
                return int(value.split()[0]) * 1024
    return 0


def _record_calls(calls: list[list[str]]) -> Any:
    """Note each AWS call (service, operation) in ``calls``; returns what undoes it. Only if botocore is
    imported already (the handler's import brought it in)."""
    client_module = sys.modules.get("botocore.client")
    if client_module is None:
        return None
    base = client_module.BaseClient
    original = base._make_api_call

    def noting(self: Any, operation_name: str, api_params: Any) -> Any:
        calls.append([self.meta.service_model.service_name, operation_name])
        return original(self, operation_name, api_params)

    base._make_api_call = noting

    def restore() -> None:
        base._make_api_call = original

    return restore


def main(log_path: str) -> None:
    started = time.perf_counter()
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 1)
    os.close(log_fd)
    module: Any = None

    def answer(payload: dict[str, Any]) -> None:
        answers.write(json.dumps(payload, default=str) + "\n")
        answers.flush()

    answer({"ready": True, "since_start_s": time.perf_counter() - started, "modules": len(sys.modules)})
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "import":
            began = time.perf_counter()
            module = importlib.import_module(command["module"])
            answer(
                {
                    "seconds": time.perf_counter() - began,
                    "modules": len(sys.modules),
                    "fastapi_imported": "fastapi" in sys.modules,
                    "rss": _status("VmRSS"),
                }
            )
        elif op == "invoke":
            if command.get("reset_peak"):
                with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
                    refs.write("5")  # VmHWM back to the current RSS
            rss_before = _status("VmRSS")
            calls: list[list[str]] = []
            restore = _record_calls(calls) if command.get("record_calls") else None
            began = time.perf_counter()
            try:
                response = module.handler(command["event"], Context(command.get("context", {})))
            finally:
                seconds = time.perf_counter() - began
                if restore is not None:
                    restore()
            sys.stdout.flush()
            answer(
                {
                    "seconds": seconds,
                    "response": response,
                    "rss_before": rss_before,
                    "rss_peak": _status("VmHWM"),
                    "log_bytes": os.fstat(1).st_size,
                    "modules": len(sys.modules),
                    "fastapi_imported": "fastapi" in sys.modules,
                    "aws_calls": calls,
                }
            )
        else:
            answer({"error": f"unknown op {op!r}"})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.devnull)
