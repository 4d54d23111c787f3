"""Shared test settings: tests read the real data beside the checkout and keep run outputs in a temp dir."""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("M1_DATA", str(ROOT.parent / "shared" / "data"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch threads must not spin on a shared 2-core machine

# Stage notebooks run under test save their stage into the work dir: never the checkout's work/ or a user's M1_WORK
# (a real run there would be overwritten). Each test process (each xdist worker) gets its own, removed at exit.
_work = tempfile.mkdtemp(prefix="m1-test-work-")
os.environ["M1_WORK"] = _work
atexit.register(shutil.rmtree, _work, ignore_errors=True)
