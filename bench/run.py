"""Run the batchfuse benchmarks and write bench/RESULTS.md.

    .venv/bin/python bench/run.py                      # all benchmarks, full sizes (about 16 minutes)
    .venv/bin/python bench/run.py --quick              # smaller sizes, about 2 minutes
    .venv/bin/python bench/run.py --only throughput    # one benchmark (repeatable)

Each benchmark is a module of this folder with ``NAME``, ``TITLE`` and ``run(quick, work)``.
Results go to ``bench/results.json`` (the latest report of each benchmark) and are rendered into
``bench/RESULTS.md``; ``--only`` replaces that benchmark's section and keeps the others.
Quick runs write ``results-quick.json`` / ``RESULTS-quick.md`` instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, MOCK_CPU, Machine, Report, Target, others_load, pin_self, use_bytecode  # noqa: E402

#: In the order they run.
BENCHMARKS = ["throughput", "rate", "rate_limiters", "wrong_limit", "scale", "shared_images", "large", "memory"]


def render_report(report: Report) -> list[str]:
    lines = [f"## {report.title}{' (quick sizes)' if report.quick else ''}", ""]
    lines += [f"*{report.setup}.* Measured {report.date}, took {report.seconds:.0f} s.", ""]
    if report.rows:
        lines.append("| " + " | ".join(report.header) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "--:" for i in range(len(report.header))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in report.rows]
        lines.append("")
    if report.targets:
        lines.append("| target | met | figure |")
        lines.append("|---|:-:|---|")
        for t in report.targets:
            mark = "—" if t.met is None else ("yes" if t.met else "**no**")
            lines.append(f"| {t.what} | {mark} | {t.detail} |")
        lines.append("")
    lines += [f"- {note}" for note in report.notes]
    if report.notes:
        lines.append("")
    return lines


def render(reports: dict[str, Report], machine: Machine, quick: bool) -> str:
    lines = ["# Benchmark results" + (" (quick sizes)" if quick else ""), ""]
    lines += ["Written by `bench/run.py`" + (" --quick" if quick else "") + "; see `bench/README.md` for "
              "what each benchmark measures. Machine of the last run:", ""]
    lines += machine.lines() + [""]
    summary = [(r.title, t) for name in BENCHMARKS if (r := reports.get(name)) for t in r.targets if t.met is not None]
    if summary:
        lines += ["| benchmark | target | met |", "|---|---|:-:|"]
        lines += [f"| {title} | {t.what} | {'yes' if t.met else '**no**'} |" for title, t in summary]
        lines.append("")
    for name in BENCHMARKS:
        if name in reports:
            lines += render_report(reports[name])
    notes = BENCH / "notes.md"
    if notes.exists() and not quick:  # hand-written findings (profiles, prototypes), kept across runs
        lines += ["", notes.read_text(encoding="utf-8").strip()]
    if not quick:  # sections other scripts write between markers (bench/objectstore.py): kept
        lines += ["", *kept_blocks(BENCH / "RESULTS.md")]
    return "\n".join(lines).rstrip() + "\n"


def kept_blocks(path: Path) -> list[str]:
    """The ``<!-- name:begin -->`` ... ``<!-- name:end -->`` blocks of the current RESULTS.md."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [m.group(0) for m in re.finditer(r"<!-- (\w+):begin -->.*?<!-- \1:end -->", text, re.S)]


def print_report(report: Report) -> None:
    print(f"\n== {report.title}: {report.setup}")
    if report.rows:
        widths = [max(len(str(row[i])) for row in [report.header, *report.rows]) for i in range(len(report.header))]
        for row in [report.header, *report.rows]:
            print("  " + "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in
                                   enumerate(zip(row, widths, strict=True))))
    for t in report.targets:
        mark = "    " if t.met is None else ("MET " if t.met else "MISS")
        print(f"  [{mark}] {t.what}: {t.detail}")
    for note in report.notes:
        print(f"  - {note}")
    print(f"  ({report.seconds:.0f} s)", flush=True)


def load_reports(path: Path) -> dict[str, Report]:
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {
            name: Report(**{**r, "targets": [Target(**t) for t in r["targets"]]})
            for name, r in raw.get("reports", {}).items()
        }
    except (ValueError, TypeError, KeyError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the batchfuse benchmarks.")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a couple of minutes in all)")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed) for a look")
    args = parser.parse_args(argv)
    pin_self(MOCK_CPU)  # the driver mostly waits; keep it off the client's core
    machine = Machine()
    suffix = "-quick" if args.quick else ""
    json_path, md_path = BENCH / f"results{suffix}.json", BENCH / f"RESULTS{suffix}.md"
    reports = load_reports(json_path)
    print("\n".join(machine.lines()))
    failed = []
    work_root = Path(tempfile.mkdtemp(prefix="batchfuse-bench-"))
    try:
        use_bytecode(work_root / "pycache")
        for name in args.only or BENCHMARKS:
            module = importlib.import_module(name)
            work = work_root / name
            work.mkdir()
            print(f"\n-- {module.TITLE} ...", flush=True)
            load_before = others_load()
            if load_before > 0.1:
                print(f"   warning: other processes are using {load_before:.2f} cores; figures will be noisier",
                      flush=True)
            started = time.monotonic()
            try:
                report: Report = module.run(args.quick, work)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                continue
            report.seconds = time.monotonic() - started
            load_after = others_load()
            if max(load_before, load_after) > 0.1:
                report.notes.append(
                    f"the machine was not idle: other processes used {load_before:.2f} cores before this "
                    f"benchmark and {load_after:.2f} after it"
                )
            print_report(report)
            reports[name] = report
            json_path.write_text(json.dumps(
                {"machine": dataclasses.asdict(machine),
                 "reports": {k: dataclasses.asdict(v) for k, v in reports.items()}},
                indent=1, default=str,
            ) + "\n", encoding="utf-8")
            md_path.write_text(render(reports, machine, args.quick), encoding="utf-8")
    finally:
        if args.keep:
            print(f"work folder kept: {work_root}")
        else:
            import shutil

            shutil.rmtree(work_root, ignore_errors=True)
    print(f"\nwrote {md_path.relative_to(BENCH.parent)}")
    if failed:
        print(f"benchmarks that could not run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
