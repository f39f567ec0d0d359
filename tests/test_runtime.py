"""Run-time set-up: the allocator setting that keeps large tensors' memory warm."""

import ctypes
import subprocess
import sys

import pytest

# Hold four 8 MiB tensors at once and free them together, as every step of a population does with
# its layers' activations: after 5 warm-up rounds, print the page faults of the next 200. Mode
# "returned" holds glibc at its initial 128 KiB mmap threshold, so every block goes back to the
# kernel when freed (what glibc's own adaptive thresholds do only some of the time, which makes
# them no fixed reference for a test; the bench measures them: docs/performance.md).
_FAULTS = """
import ctypes, resource, sys, torch
from dfkd_cli.utils import runtime
if sys.argv[1] == "keep":
    assert runtime.keep_freed_memory()
else:
    assert ctypes.CDLL(None).mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD
x = torch.ones(1 << 21)
for round in range(205):
    if round == 5:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [x * 2.0 for _ in range(4)]
    del held
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1])


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallopt"), reason="needs glibc's mallopt")
def test_keep_freed_memory_stops_page_faults_on_every_large_tensor():
    returned, kept = _faults("returned"), _faults("keep")
    assert returned > 200 * 4 * 1_000  # every block's 2,048 pages faulted in again, every round
    assert kept < 4 * 8_192  # reused: a few blocks' pages at most, not every round's


def test_keep_freed_memory_is_on_by_default_and_can_be_turned_off():
    from conftest import make_config
    assert make_config("distill", []).keep_freed_memory is True
    assert make_config("distill", ["keep_freed_memory=false"]).keep_freed_memory is False
