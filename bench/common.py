"""Shared pieces of the benchmarks: the mock API in its own pinned process, measured
subprocesses (wall time, CPU, peak RSS of exactly that child), manifests and the machine.

Only loopback traffic: the mock listens on 127.0.0.1 and every client is pointed at it.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from batchfuse.mock.manifests import mock_job

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
#: The interpreter running the benchmarks (the project's .venv): every child uses it too.
PY = sys.executable
#: The environment variable that carries the (fake) key to both clients.
KEY_ENV = "BENCH_API_KEY"
KEY = "bench-key-not-a-secret"
MODEL = "gemini-3-pro-image-preview"
GENERATE_PATH = f"/v1beta/models/{MODEL}:generateContent"

_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
#: The mock gets one core, the client under test the other (None: not pinned).
MOCK_CPU: int | None = _CPUS[0] if len(_CPUS) >= 2 else None
CLIENT_CPU: int | None = _CPUS[1] if len(_CPUS) >= 2 else None


def pin_self(cpu: int | None) -> None:
    """Pin the calling process (the benchmark driver) to ``cpu``; it mostly waits."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _pinned(cpu: int | None) -> Any:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def use_bytecode(folder: Path) -> None:
    """Let every child load compiled bytecode, as an installed package does (``pip install``
    compiles it): with ``PYTHONDONTWRITEBYTECODE`` set (as on some CI machines) each run would
    compile batchfuse's ~150 modules from source again, ~0.15 s of CPU that no user pays and the
    one-file baseline barely does. The bytecode goes to ``folder`` (``PYTHONPYCACHEPREFIX``), not
    into the source tree; it is compiled once here, before anything is measured."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(folder)
    subprocess.run(
        [PY, "-m", "compileall", "-q", str(ROOT / "batchfuse"), str(BENCH)],
        check=True, env={**os.environ, "PYTHONPYCACHEPREFIX": str(folder)},
    )


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every child: no BATCHFUSE_* setting from outside, no proxies, the
    fake key, unbuffered output, bytecode from :func:`use_bytecode`'s folder when it was called."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BATCHFUSE_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update({KEY_ENV: KEY, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------ the mock


class Mock:
    """``python -m batchfuse.mock --port 0 ...`` in its own process, pinned to :data:`MOCK_CPU`.

    Usage::

        with Mock("--latency-ms", "200") as mock:
            ...  # mock.url, mock.log(), mock.reset(), mock.configure(rpm_limit=1200)
    """

    def __init__(self, *args: str, cpu: int | None = MOCK_CPU, log_dir: Path | None = None) -> None:
        self.args = [str(a) for a in args]
        self.cpu = cpu
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_path = (log_dir or Path("/tmp")) / f"bench-mock-{os.getpid()}-{id(self)}.err"

    def start(self, timeout_s: float = 30.0) -> Mock:
        cmd = [PY, "-m", "batchfuse.mock", "--host", "127.0.0.1", "--port", "0", *self.args]
        self._stderr = open(self._stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._stderr, env=child_env(), cwd=ROOT,
            preexec_fn=_pinned(self.cpu),
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._proc.stdout], [], [], max(0.0, left))
            if not ready:
                self.stop()
                raise RuntimeError(f"the mock did not start within {timeout_s:g} s")
            chunk = os.read(self._proc.stdout.fileno(), 4096)
            if not chunk:
                self.stop()
                raise RuntimeError(f"the mock exited at start: {self._stderr_path.read_text()[-2000:]}")
            line += chunk
        match = re.search(r"listening on (http://\S+)", line.decode())
        if not match:
            self.stop()
            raise RuntimeError(f"unexpected first line from the mock: {line!r}")
        self.url = match.group(1)
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the mock is not on loopback: {self.url}")
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _call(self, method: str, path: str, body: Any = None, timeout_s: float = 60.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        with opener.open(request, timeout=timeout_s) as resp:
            return json.loads(resp.read())

    def log(self) -> list[dict[str, Any]]:
        """The mock's request log (every request, in the order they were answered)."""
        return self._call("GET", "/_mock/log")

    def generations(self) -> list[dict[str, Any]]:
        """The log entries of generation requests only."""
        return [e for e in self.log() if e.get("api") == "gemini"]

    def reset(self) -> None:
        self._call("POST", "/_mock/reset", {})

    def configure(self, **changes: Any) -> None:
        self._call("POST", "/_mock/config", changes)

    def cpu_s(self) -> float:
        """CPU seconds the mock process has used so far (from /proc)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()
        try:
            self._stderr_path.unlink()
        except OSError:
            pass

    def __enter__(self) -> Mock:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------ measured children


@dataclass
class Measured:
    """One child process: how it ended and what it cost (its own rusage, from ``wait4``)."""

    cmd: list[str]
    returncode: int
    #: ``time.time()`` just before the child was started.
    started_at: float
    wall_s: float
    user_s: float
    sys_s: float
    #: Peak resident set size of the child, in MiB.
    maxrss_mb: float
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def check(self, *ok: int) -> Measured:
        if self.returncode not in (ok or (0,)):
            raise RuntimeError(
                f"{' '.join(self.cmd[:4])} ... exited {self.returncode}"
                f"{' (timed out)' if self.timed_out else ''}:\n{self.stderr[-3000:]}"
            )
        return self


def run_measured(
    cmd: list[str],
    *,
    cpu: int | None = CLIENT_CPU,
    timeout_s: float = 600.0,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Measured:
    """Run ``cmd`` pinned to ``cpu`` and measure it with ``os.wait4`` (its own CPU time and peak
    RSS, not mixed with other children such as the mock). Killed after ``timeout_s``."""
    cmd = [str(c) for c in cmd]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

    def drain(fd: int) -> None:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            chunks[fd].append(data)
        os.close(fd)

    readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in (out_r, err_r)]
    started_at = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=out_w, stderr=err_w, cwd=cwd or ROOT, env=env or child_env(), preexec_fn=_pinned(cpu)
    )
    os.close(out_w)
    os.close(err_w)
    for r in readers:
        r.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    for r in readers:
        r.join()
    return Measured(
        cmd=cmd,
        returncode=proc.returncode,
        started_at=started_at,
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024,
        stdout=b"".join(chunks[out_r]).decode("utf-8", "replace"),
        stderr=b"".join(chunks[err_r]).decode("utf-8", "replace"),
        timed_out=timed_out.is_set(),
    )


def _cpu_ticks() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]), idle


def others_load(seconds: float = 1.0) -> float:
    """Cores' worth of CPU used on the machine over ``seconds`` while the benchmark itself is idle
    (other people's tests, builds): anything above ~0.1 makes the figures noisier."""
    try:
        total0, idle0 = _cpu_ticks()
        time.sleep(seconds)
        total1, idle1 = _cpu_ticks()
    except (OSError, ValueError, IndexError):
        return 0.0
    busy = (total1 - total0) - (idle1 - idle0)
    return busy / max(1, total1 - total0) * (os.cpu_count() or 1)


def settle(pause_s: float = 1.0) -> None:
    """Flush the page cache's dirty data of earlier runs and let the disk go quiet, so a measured
    run does not pay for the previous one's writeback (file-system work shows as system CPU)."""
    os.sync()
    time.sleep(pause_s)


def batchfuse(*args: Any, **kw: Any) -> Measured:
    """``batchfuse ARGS`` (the installed CLI, via ``python -m batchfuse.cli``) measured.

    ``BENCH_BATCHFUSE_CMD`` replaces ``python -m batchfuse.cli`` (split on spaces), to measure
    another build or a patched entry point against the same harness."""
    command = os.environ.get("BENCH_BATCHFUSE_CMD", "").split() or [PY, "-m", "batchfuse.cli"]
    return run_measured([*command, *map(str, args)], **kw)


def baseline(url: str, n: int, concurrency: int, out_dir: Path, **kw: Any) -> Measured:
    """The bare aiohttp client of ``bench/baseline.py`` measured; keyword options become flags
    (``rpm=1200`` -> ``--rpm 1200``, ``image=[a, b]`` -> ``--image a --image b``)."""
    cmd = [PY, str(BENCH / "baseline.py"), "--url", url, "--n", str(n), "--concurrency", str(concurrency),
           "--out", str(out_dir)]
    run_kw = {k: kw.pop(k) for k in ("timeout_s", "cpu") if k in kw}
    for name, value in kw.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        for v in value if isinstance(value, (list, tuple)) else [value]:
            cmd += [flag, str(v)]
    return run_measured(cmd, **run_kw)


def last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in output: {text[-500:]!r}")


# --------------------------------------------------------------------------------- helpers


#: A benchmark job's limits: wide concurrency, patient timeouts.
BENCH_LIMITS = {"concurrency": 64, "requests_per_minute": None, "max_attempts": 8, "timeout_s": 60,
                "backoff_base_s": 0.5, "backoff_max_s": 30}


def manifest(url: str, job: str, **sections: Any) -> dict[str, Any]:
    """A Gemini manifest against the mock at ``url`` with the benchmarks' limits."""
    return mock_job(url, job, KEY_ENV, BENCH_LIMITS, **sections)


def write_manifest(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def write_catalog(path: Path, n: int, images: list[str] | None = None) -> Path:
    """A CSV catalog of ``n`` rows: id, title (and image, cycling through ``images``)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("id,title" + (",image" if images else "") + "\n")
        for i in range(n):
            row = f"item-{i:06d},product {i}"
            if images:
                row += f",{images[i % len(images)]}"
            f.write(row + "\n")
    return path


def solid_png(path: Path, size: tuple[int, int] = (48, 48), colour: tuple[int, int, int] = (200, 110, 80)) -> Path:
    from PIL import Image

    Image.new("RGB", size, colour).save(path)
    return path


def noise_png(path: Path, kilobytes: int, seed: int = 1) -> Path:
    """A reference image of about ``kilobytes`` KB: a square PNG of grey-ish noise (a photo's
    entropy), like the 50-300 KB product shots a real job sends."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    side = int((kilobytes * 1024 / 0.97) ** 0.5)  # ~0.97 bytes per pixel with 2 random bits a channel
    raw = bytes(rng.getrandbits(2) * 64 + 32 for _ in range(side * side * 3))
    Image.frombytes("RGB", (side, side), raw).save(path)
    return path


def status_json(manifest_path: Path, db: Path) -> dict[str, Any]:
    result = batchfuse("status", manifest_path, "--db", db, "--json", timeout_s=120).check()
    return json.loads(result.stdout)


def output_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.png") if p.is_file()) if folder.is_dir() else 0


def gen_rate(entries: list[dict[str, Any]], status: int | None = 200) -> float:
    """Items/s as the server saw them: (n - 1) / (last - first) over the answers with ``status``."""
    times = sorted(e["t"] for e in entries if status is None or e.get("status") == status)
    if len(times) < 2 or times[-1] <= times[0]:
        return float("nan")
    return (len(times) - 1) / (times[-1] - times[0])


def max_in_window(times: list[float], window_s: float = 60.0) -> int:
    """The most events in any sliding window of ``window_s`` (times sorted or not)."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def b64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


# --------------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass
class Machine:
    cpu: str = field(default_factory=_cpu_model)
    cores: int = field(default_factory=lambda: os.cpu_count() or 0)
    memory_gb: float = field(
        default_factory=lambda: round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    )
    os: str = field(default_factory=lambda: f"{platform.system()} {platform.release()}")
    python: str = field(default_factory=lambda: platform.python_version())
    aiohttp: str = field(default_factory=lambda: _version("aiohttp"))
    sqlalchemy: str = field(default_factory=lambda: _version("SQLAlchemy"))
    batchfuse: str = field(default_factory=lambda: _version("batchfuse"))
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    pinning: str = field(
        default_factory=lambda: (
            f"mock on CPU {MOCK_CPU}, client on CPU {CLIENT_CPU}" if CLIENT_CPU is not None else "not pinned"
        )
    )
    git: str = field(default_factory=lambda: _git_describe())

    def lines(self) -> list[str]:
        return [
            f"- CPU: {self.cpu}, {self.cores} cores, {self.memory_gb} GB RAM; {self.os}",
            f"- Python {self.python}; aiohttp {self.aiohttp}; SQLAlchemy {self.sqlalchemy}; "
            f"batchfuse {self.batchfuse} ({self.git})",
            f"- Pinning: {self.pinning}",
            f"- Date: {self.date}",
        ]


def _git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "batchfuse", "migrations"],
            cwd=ROOT, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return f"git {head}{' + uncommitted changes' if dirty else ''}" if head else "no git"
    except (OSError, subprocess.SubprocessError):
        return "no git"


# --------------------------------------------------------------------------------- reports


@dataclass
class Target:
    """One target of the benchmark issue and whether this run met it (None: figure only)."""

    what: str
    met: bool | None
    detail: str


@dataclass
class Report:
    """What one benchmark hands back to ``run.py``: a table, the targets, notes, raw data."""

    name: str
    title: str
    setup: str
    header: list[str]
    rows: list[list[str]]
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    quick: bool = False
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    seconds: float = 0.0


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    if not a or not b or a != a or b != b:
        return "n/a"
    return f"{a / b:.{digits}f}×"
