"""moto as a server in its own process, with the fixes of ``herald.local.moto_fixes``.

Out of process, AWS behaves as it does for a Lambda function: a remote service whose work does not
take the measured process's GIL or memory. ``python -m benchmarks.moto_server`` prints
``{"port": ...}`` and serves on 127.0.0.1 until its stdin closes.
"""

from __future__ import annotations

import json
import sys

from benchmarks.child import ChildProcess


class MotoServerProcess(ChildProcess):
    """Starts ``python -m benchmarks.moto_server`` and says where it listens."""

    def __init__(self, *, moto_deepcopy: bool = False) -> None:
        super().__init__("benchmarks.moto_server", *(["--moto-deepcopy"] if moto_deepcopy else []))
        self.endpoint_url = f"http://127.0.0.1:{self.hello['port']}"


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
