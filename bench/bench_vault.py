"""Vault speed: Argon2id calibration, unlock time with the default KDF parameters, put/get throughput.

    python bench/bench_vault.py [--repeats 5] [--calibrate] [--sizes-mib 1 16 64]

Unlock = ``Vault.open`` (Argon2id + unwrap + state/index load + one audit append), median of ``--repeats``.
Put/get = median MB/s (MB = 10^6 bytes) of storing / reading back random data of each size, including the
durable write protocol (fsync + rename + fsync dir for blob, index and state). Never asserts on time.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vault import KdfParams, Vault  # noqa: E402
from vault import crypto  # noqa: E402

PASSPHRASE = "benchmark passphrase, not secret"
GRID = [KdfParams(64 * 1024, 3, 4), KdfParams(128 * 1024, 3, 4), KdfParams(256 * 1024, 2, 4),
        KdfParams(256 * 1024, 3, 4), KdfParams(256 * 1024, 4, 4), KdfParams(512 * 1024, 2, 4)]


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calibrate", action="store_true", help="also time a grid of Argon2id settings")
    ap.add_argument("--sizes-mib", type=float, nargs="+", default=[1, 16, 64])
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    if args.calibrate:
        print("Argon2id derivation (median of 3):")
        for p in GRID:
            t = _median_time(lambda p=p: crypto.derive_passphrase_kek(PASSPHRASE, p, b"s" * 32), 3)
            print(f"  {p.memory_kib // 1024:>4} MiB  t={p.iterations}  p={p.lanes}: {t:6.3f} s")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CRYSTALQC_STATE_DIR"] = str(Path(tmp) / "state")
        path = Path(tmp) / "vault"
        d = KdfParams.default()
        vault, _ = Vault.create(path, PASSPHRASE, user="bench")
        vault.lock()
        kdf = _median_time(lambda: crypto.derive_passphrase_kek(PASSPHRASE, d, b"s" * 32), args.repeats)
        unlock = _median_time(lambda: Vault.open(path, PASSPHRASE, user="bench").lock(), args.repeats)
        print(f"default KDF: Argon2id {d.memory_kib // 1024} MiB, t={d.iterations}, p={d.lanes}")
        print(f"  Argon2id alone: median {kdf:.3f} s;  Vault.open (unlock): median {unlock:.3f} s "
              f"(of {args.repeats})")
        vault = Vault.open(path, PASSPHRASE, user="bench")
        print(f"{'size MiB':>9} {'put MB/s':>9} {'get MB/s':>9}")
        for size_mib in args.sizes_mib:
            data = os.urandom(int(size_mib * 1024 * 1024))
            name = f"bench/{size_mib}"
            put = _median_time(lambda: vault.put(name, data, kind="other"), args.repeats)
            get = _median_time(lambda: vault.get(name), args.repeats)
            print(f"{size_mib:>9g} {len(data) / put / 1e6:>9.1f} {len(data) / get / 1e6:>9.1f}")
        small = _median_time(lambda: vault.put("bench/small.json", b"{}", kind="result"), args.repeats)
        print(f"small put (2 bytes, latency of the durable write protocol): median {small * 1000:.1f} ms")
        vault.lock()


if __name__ == "__main__":
    main()
