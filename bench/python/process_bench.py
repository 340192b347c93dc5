"""asyncio / uvloop side of `cargo xtask bench process`.

    python process_bench.py --system asyncio|uvloop
                            --case spawn_seq|spawn_16|pipe_256m [--quick] [--n N]

The same cases as ``bench-process`` (bench/src/bin/bench_process.rs), with
``asyncio.create_subprocess_exec``, and the same ``result case=.. system=..
value=.. unit=.. n=..`` lines on stdout:

- ``spawn_seq``: N spawns of ``/bin/true`` (stdin, stdout, stderr
  ``DEVNULL``) one after another, each ``await proc.wait()``-ed (return code
  must be 0).
- ``spawn_16``: the same with 16 worker tasks taking the next spawn from a
  shared counter (16 in flight at once).
- ``pipe_256m``: ``/bin/cat`` with stdin and stdout ``PIPE`` (stderr
  ``DEVNULL``): a writer task does ``stdin.write(chunk); await
  stdin.drain()`` for 256 KiB chunks, then ``stdin.close()``; a reader task
  does ``await stdout.read(256 KiB)`` until EOF (the StreamReader returns
  what it holds, at most that); both under ``asyncio.gather``. Not
  ``communicate()``, which would hold all 256 MiB in memory.

Every spawn case first makes 20 untimed spawns. CPU time is
``time.process_time()`` (``CLOCK_PROCESS_CPUTIME_ID``: every thread of this
process, not the children). ``--system uvloop`` runs the same code on
uvloop. asyncio uses the policy's default child watcher (``ThreadedChildWatcher``
on 3.8-3.11: a thread per child blocked in ``waitpid``; pidfds from 3.12).
"""

import argparse
import asyncio
import sys
import time
from asyncio.subprocess import DEVNULL, PIPE

N_SPAWN_SEQ = 500
N_SPAWN_16 = 500
PIPE_MIB = 256
WARMUP = 20
WINDOW = 16
CHUNK = 256 * 1024
READ = 256 * 1024
TRUE = "/bin/true"
CAT = "/bin/cat"


def report(case, system, value, unit, n):
    sys.stdout.write(f"result case={case} system={system} value={value:.3f} unit={unit} n={n}\n")


async def spawn_one():
    proc = await asyncio.create_subprocess_exec(TRUE, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
    code = await proc.wait()
    if code != 0:
        raise RuntimeError(f"{TRUE} exited with {code}")


async def spawn_worker(state, n):
    while state[0] < n:
        state[0] += 1
        await spawn_one()


async def spawn_case(n, window):
    for _ in range(WARMUP):
        await spawn_one()
    state = [0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    if window == 1:
        await spawn_worker(state, n)
    else:
        await asyncio.gather(*(spawn_worker(state, n) for _ in range(window)))
    return time.perf_counter() - t0, time.process_time() - cpu0


async def pipe_case(nbytes):
    chunk = bytes(i % 251 for i in range(CHUNK))
    chunks = nbytes // CHUNK
    cpu0, t0 = time.process_time(), time.perf_counter()
    proc = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE, stderr=DEVNULL)

    async def writer():
        stdin = proc.stdin
        for _ in range(chunks):
            stdin.write(chunk)
            await stdin.drain()
        stdin.close()

    async def reader():
        stdout = proc.stdout
        got = 0
        while True:
            data = await stdout.read(READ)
            if not data:
                return got
            got += len(data)

    _, got = await asyncio.gather(writer(), reader())
    code = await proc.wait()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if code != 0:
        raise RuntimeError(f"{CAT} exited with {code}")
    if got != nbytes:
        raise RuntimeError(f"read {got} of {nbytes} bytes")
    return wall, cpu


def count(args, full):
    if args.n is not None:
        return args.n
    return full // 10 if args.quick else full


async def main(args):
    system = args.system
    if args.case in ("spawn_seq", "spawn_16"):
        if args.case == "spawn_seq":
            n, window = count(args, N_SPAWN_SEQ), 1
        else:
            n, window = count(args, N_SPAWN_16), WINDOW
        wall, cpu = await spawn_case(n, window)
        per = max(n, 1)
        report(f"{args.case}_per_s", system, n / wall if wall > 0 else 0.0, "spawn/s", n)
        report(f"{args.case}_us_per_spawn", system, wall * 1e6 / per, "us/spawn", n)
        report(f"{args.case}_cpu_us_per_spawn", system, cpu * 1e6 / per, "us/spawn", n)
    elif args.case == "pipe_256m":
        mib = count(args, PIPE_MIB)
        nbytes = mib * 1024 * 1024
        wall, cpu = await pipe_case(nbytes)
        report("pipe_256m_mb_per_s", system, nbytes / 1e6 / max(wall, 1e-9), "MB/s", mib)
        gb = max(nbytes / 1e9, 1e-9)
        report("pipe_256m_cpu_ms_per_gb", system, cpu * 1e3 / gb, "ms/GB", mib)
    else:
        raise SystemExit(f"process_bench.py: unknown case `{args.case}`")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", required=True, choices=["asyncio", "uvloop"])
    parser.add_argument("--case", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None)
    args = parser.parse_args()
    if args.system == "uvloop":
        import uvloop

        if hasattr(uvloop, "run"):
            uvloop.run(main(args))
        else:
            uvloop.install()
            asyncio.run(main(args))
    else:
        asyncio.run(main(args))
    sys.stdout.flush()
