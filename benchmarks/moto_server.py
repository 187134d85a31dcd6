"""moto as a server in its own process, with the fixes of ``benchmarks.moto_fixes``.

Out of process, AWS behaves as it does for a Lambda function: a remote service whose work does not
take the measured process's GIL or memory. ``python -m benchmarks.moto_server`` prints
``{"port": ...}`` and serves on 127.0.0.1 until its stdin closes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class MotoServerProcess:
    """Starts ``python -m benchmarks.moto_server`` and says where it listens."""

    def __init__(self, *, moto_deepcopy: bool = False) -> None:
        command = [sys.executable, "-m", "benchmarks.moto_server"]
        if moto_deepcopy:
            command.append("--moto-deepcopy")
        self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("the moto server process did not start")
        self.endpoint_url = f"http://127.0.0.1:{json.loads(line)['port']}"

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> MotoServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(moto_deepcopy: bool) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from herald.local.moto_fixes import moto_fixes

    with moto_fixes(deepcopy_transactions=moto_deepcopy):
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        print(json.dumps({"port": server.get_host_and_port()[1]}), flush=True)
        sys.stdin.read()
        server.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--moto-deepcopy", action="store_true")
    main(parser.parse_args().moto_deepcopy)
