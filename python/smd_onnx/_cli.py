"""The wheel's ``smd-onnx`` console command: the Rust CLI, run in this process."""

import signal
import sys

from . import _native


def main() -> None:
    """Run ``smd-onnx`` with ``sys.argv`` and exit with its status (0, 1 partial, 2 error)."""
    # Behave as the binary does: Ctrl-C kills the run (outputs are written atomically, the
    # journal keeps what was scored), and a closed pipe ends it quietly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = ["smd-onnx", *sys.argv[1:]]
    sys.stdout.flush()
    sys.exit(_native.run_cli(argv))


if __name__ == "__main__":
    main()
