"""Resident memory of this process from Linux /proc: the current size and the peak since a reset.

Used where a real allocation is measured (the plan's test, the benchmark); Linux only.
"""


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def resident_bytes() -> int:
    return _status_bytes("VmRSS")


def reset_peak() -> None:
    """Sets the peak (VmHWM) to the current resident size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_bytes() -> int:
    """The peak resident size since the last `reset_peak` (or since the process started)."""
    return _status_bytes("VmHWM")
