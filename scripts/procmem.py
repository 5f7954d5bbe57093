"""Peak resident memory of this process, per measured section, for the
PyTorch benchmark scripts (the same figure `headstart bench` reports as
`peak_rss_mib`): VmHWM from /proc/self/status, reset to the current
resident memory by writing 5 to /proc/self/clear_refs (Linux 4.0+)."""


def reset_peak_rss() -> bool:
    """Resets VmHWM to what the process holds now; False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib(reset: bool):
    """VmHWM in MiB since the last reset (None if `reset` failed or no /proc)."""
    if not reset:
        return None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None
