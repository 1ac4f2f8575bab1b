#!/usr/bin/env python3
"""Times first touches of fresh anonymous memory, back to back and after a pause.

On a VM whose guest hands free memory back to the host (virtio-balloon free-page
reporting, `page_reporting.page_reporting_order` on the kernel command line), memory
freed and left alone for a while costs a host fault when touched again. That makes rows
that fill much new memory (the bench's snapshot row writes 5 x 64 MiB into /dev/shm)
sporadically slow. Usage: perf/page_touch.py [MiB] [rounds] [pause seconds]
"""
import mmap
import sys
import time

mib = int(sys.argv[1]) if len(sys.argv) > 1 else 512
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
size = mib << 20
page = mmap.PAGESIZE

try:
    cmdline = open("/proc/cmdline").read()
    reporting = [w for w in cmdline.split() if "page_reporting" in w or "halt_poll" in w]
    print("kernel command line:", " ".join(reporting) or "(no page reporting or halt-poll settings)")
except OSError:
    pass


def touch_round():
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    t = time.perf_counter()
    for i in range(0, size, page):
        m[i] = 1
    took = time.perf_counter() - t
    m.close()
    return took


for label, wait in (("back to back", 0.0), (f"{pause:g} s apart", pause)):
    for r in range(rounds):
        took = touch_round()
        print(f"{label:>14}: {mib} MiB touched in {took * 1e3:6.0f} ms, "
              f"{took * 1e6 / (size // page):5.2f} us per page")
        if wait:
            time.sleep(wait)
