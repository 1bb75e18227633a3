#!/usr/bin/env python3
"""disk_probe.py: how many 4 KB pages per second the disk under DIR takes,
written at random places and in order, with an fdatasync every --sync-every
pages (as LMDB commits do). cairn's durable commits are bound by the first
figure when their pages are scattered (see BENCHMARKS.md, "What stood in the
way"). Writes and removes a 1 GiB file in DIR.

Usage: bench/disk_probe.py [--dir DIR] [--pages N] [--sync-every N]
"""
import argparse
import os
import random
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to write (default: $TMPDIR or /tmp)")
    parser.add_argument("--pages", type=int, default=100000, help="pages written in each pattern (default 100000)")
    parser.add_argument("--sync-every", type=int, default=2000, help="fdatasync after this many pages (default 2000)")
    args = parser.parse_args()

    size = 1 << 30
    fd, path = tempfile.mkstemp(prefix="cairn-disk-probe.", dir=args.dir)
    try:
        big = os.urandom(1 << 20)
        for i in range(size >> 20):  # allocate the file's blocks first
            os.pwrite(fd, big, i << 20)
        os.fsync(fd)
        page = os.urandom(4096)
        patterns = (
            ("random", [random.randrange(0, size // 4096) * 4096 for _ in range(args.pages)]),
            ("sequential", [i * 4096 for i in range(args.pages)]),
        )
        for name, offsets in patterns:
            start = time.monotonic()
            for i, offset in enumerate(offsets, 1):
                os.pwrite(fd, page, offset)
                if i % args.sync_every == 0:
                    os.fdatasync(fd)
            os.fdatasync(fd)
            seconds = time.monotonic() - start
            print(f"{name:10} 4 KB pages, fdatasync every {args.sync_every}: "
                  f"{args.pages / seconds:,.0f} pages/s ({args.pages * 4096 / seconds / 1e6:,.0f} MB/s)")
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main()
