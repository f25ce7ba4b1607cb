"""DICOM header de-identification throughput: deid-gateway vs pydicom read+write, dicognito, deid.

    python benchmarks/dicom_throughput.py [--files 800] [--repeats 3] [--workdir DIR] [--json]
                                          [--tools floor,cli,gateway,dicognito,deid] [--cprofile [N]]

What it does, all on one generated corpus (``benchmarks/_corpus.py``: >= 800 copies of pydicom's
own test files, each with its own patient/study/series/instance identity and PHI in descriptors):

* ``pydicom read+write`` (the floor): ``dcmread`` + ``dcmwrite`` of every file, one process.
* ``deid-gateway CLI``: ``deid-gateway deidentify --profile basic --jobs N`` as a subprocess
  (wall clock, so interpreter start-up and imports are included).
* ``deid-gateway in-process``: ``gateway.intake.directory.run_dicom_files`` with a ``RunConfig``
  (no interpreter start-up; ``--jobs 2`` still includes starting the worker pool).
* ``dicognito``: its Python API, ``Anonymizer().anonymize(ds)`` + ``dcmwrite``, one process.
* ``deid`` (pydicom/deid): ``deid.dicom.replace_identifiers([file], deid=DeidRecipe(),
  save=True, output_folder=...)``: the default recipe (parsed once per run), deid's own writer.

The gateway runs the ``basic`` profile: the header path only. (``research`` adds Clean Pixel
Data, which needs OCR, and is a different benchmark.) Each case runs ``--repeats`` times,
round-robin over the cases after one warm-up on a few files; the table reports the best run
(the machine may be shared: other load only ever adds time) with the median beside it, and the
CPU seconds of single-process runs (robust to load from elsewhere). Each output goes to a fresh
folder, removed between runs outside the timed region. The key is a fixed 40-character test key.

The ratio column is a time ratio, ``tool seconds / floor seconds``; "per core" multiplies by
the number of processes (the issue's target: header path <= 1.4x the floor per core). The CLI
rows include interpreter start-up and imports; the in-process rows and the 1-file CLI run
separate that fixed cost from the per-file cost.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import CorpusSummary, build_corpus

TEST_KEY = "benchmark-test-key-not-a-secret-0123456"  # 40 characters, for benchmarks only
PROFILE = "basic"
TOOLS = ("floor", "cli", "gateway", "dicognito", "deid")
TARGET_PER_CORE = 1.4
WARMUP_FILES = 20
FLOOR, CLI, GATEWAY = "pydicom read+write", "deid-gateway CLI", "deid-gateway"

Runner = Callable[[list[Path], Path], int]  # (files, output folder) -> files written


@dataclass
class Measurement:
    tool: str
    how: str
    jobs: int
    files: int
    ok: list[int] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)  # wall seconds, one per run
    cpu: list[float] = field(default_factory=list)  # CPU seconds, when measurable (jobs 1)

    @property
    def best(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def cpu_best(self) -> float | None:
        return min(self.cpu) if self.cpu else None

    @property
    def files_per_s(self) -> float:
        return self.files / self.best if self.samples else float("nan")

    def as_dict(self, floor: Measurement | None) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            best=self.best, median=self.median, cpu_best=self.cpu_best, files_per_s=self.files_per_s
        )
        if floor and floor.samples and self.samples:
            data["ratio"] = self.best / floor.best
            data["ratio_per_core"] = self.best * self.jobs / floor.best
            if self.cpu_best is not None and floor.cpu_best:
                data["cpu_ratio"] = self.cpu_best / floor.cpu_best
        return data


def self_cpu() -> float:
    return time.process_time()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Case:
    """One thing to time: a runner, its files, and how to read its CPU time (None: not
    measurable, e.g. pool workers, which are not this process's children)."""

    m: Measurement
    run: Runner
    files: list[Path]
    warm: bool
    cpu_clock: Callable[[], float] | None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fresh(path: Path) -> Path:
    for p in (path, path.with_name(path.name + ".quarantine")):
        shutil.rmtree(p, ignore_errors=True)
    return path


def measure_all(cases: list[Case], workdir: Path, repeats: int, budget: float) -> int:
    """Warm up, then run the cases round-robin (run 1 of every case, then run 2, ...), so that a
    burst of load from elsewhere on the machine spreads over the tools instead of hitting one.
    A further round starts only if it is expected to end within ``budget`` seconds (the first
    round always runs). Returns the number of rounds run."""
    out = workdir / "out"
    started = time.perf_counter()
    for case in cases:
        if case.warm:  # imports, dictionaries, regex caches: not what the per-file figure is about
            case.run(case.files[:WARMUP_FILES], fresh(out))
    rounds = 0
    while rounds < repeats:
        elapsed = time.perf_counter() - started
        if rounds and elapsed + elapsed / rounds > budget:
            log(
                f"  stopping after {rounds} round(s): another would exceed the {budget:.0f} s budget"
            )
            break
        rounds += 1
        for case in cases:
            m = case.m
            fresh(out)
            os.sync()  # the deleted output's writeback would otherwise land on the next case
            gc.collect()
            cpu0 = case.cpu_clock() if case.cpu_clock else 0.0
            start = time.perf_counter()
            ok = case.run(case.files, out)
            m.samples.append(time.perf_counter() - start)
            if case.cpu_clock:
                m.cpu.append(case.cpu_clock() - cpu0)
            m.ok.append(ok)
            log(
                f"  run {rounds}/{repeats} {m.tool} ({m.how}, jobs {m.jobs}): {m.samples[-1]:.2f} s, {ok} ok"
            )
    fresh(out)
    return rounds


# -- the tools -------------------------------------------------------------------------------
def run_floor(files: list[Path], out: Path) -> int:
    import pydicom

    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        pydicom.dcmwrite(out / f"{i:06d}.dcm", ds, enforce_file_format=True)
    return len(files)


def run_dicognito(files: list[Path], out: Path) -> int:
    import pydicom
    from dicognito.anonymizer import Anonymizer

    out.mkdir(parents=True, exist_ok=True)
    anonymizer = Anonymizer(seed="deid-gateway-benchmark")
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        anonymizer.anonymize(ds)
        pydicom.dcmwrite(out / f"{i:06d}.dcm", ds, enforce_file_format=True)
    return len(files)


def run_deid(files: list[Path], out: Path) -> int:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    out.mkdir(parents=True, exist_ok=True)
    recipe = DeidRecipe()  # the default recipe (deid.dicom), parsed once per run
    for path in files:  # deid writes with its own save (save_as; it may blank file meta UIDs)
        replace_identifiers(
            [str(path)], deid=recipe, save=True, output_folder=str(out), overwrite=True
        )
    return sum(1 for _ in out.iterdir())


def gateway_runner(jobs: int) -> Runner:
    from gateway.intake.directory import RunConfig, run_dicom_files
    from gateway.pipeline.outcome import Status
    from gateway.profiles.loader import load_profile

    profile = load_profile(PROFILE)

    def run(files: list[Path], out: Path) -> int:
        config = RunConfig(profile, out, out.with_name(out.name + ".quarantine"), None)
        outcomes = run_dicom_files(files, config, jobs)
        return sum(1 for o in outcomes if o.outcome.status is Status.FORWARDED)

    return run


def cli_command() -> list[str]:
    script = shutil.which("deid-gateway")
    return (
        [script]
        if script
        else [
            sys.executable,
            "-c",
            "import sys; from gateway.cli.main import main; sys.exit(main())",
        ]
    )


def cli_runner(jobs: int, corpus: Path) -> Runner:
    def run(files: list[Path], out: Path) -> int:
        source = corpus if len(files) > 1 else files[0]
        cmd = [
            *cli_command(),
            "deidentify",
            "--input",
            str(source),
            "--output",
            str(out),
            "--profile",
            PROFILE,
            "--jobs",
            str(jobs),
            "--quiet",
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=os.environ.copy(), check=False
        )
        found = re.search(r"^\s*processed\s+(\d+)", proc.stderr, re.MULTILINE)
        if proc.returncode not in (0, 1) or not found:
            raise RuntimeError(
                f"deid-gateway failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
            )
        return int(found.group(1))

    return run


def interpreter_start(files: list[Path], out: Path) -> int:
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return 0


def installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# -- the run ---------------------------------------------------------------------------------
def run_all(args: argparse.Namespace, corpus: CorpusSummary, workdir: Path) -> dict[str, Any]:
    files, n = corpus.files, len(corpus.files)
    tools = set(args.tools)
    cases: list[Case] = []
    skipped: dict[str, str] = {}
    jobs_list = sorted(set(args.jobs))
    if "floor" in tools:
        cases.append(Case(Measurement(FLOOR, "in-process", 1, n), run_floor, files, True, self_cpu))
    # the in-process gateway right after the floor: their same-round ratio spans seconds, not
    # the minutes over which a shared machine's speed drifts
    if "gateway" in tools:
        for jobs in jobs_list:
            m = Measurement(GATEWAY, "in-process run_dicom_batch", jobs, n)
            cases.append(
                Case(m, gateway_runner(jobs), files, True, self_cpu if jobs == 1 else None)
            )
    if "cli" in tools:
        for jobs in jobs_list:
            m = Measurement(CLI, "subprocess, wall clock incl. start-up", jobs, n)
            cases.append(
                Case(
                    m,
                    cli_runner(jobs, corpus.root),
                    files,
                    False,
                    children_cpu if jobs == 1 else None,
                )
            )
    for tool, runner, dist, how in (
        ("dicognito", run_dicognito, "dicognito", "API: Anonymizer().anonymize + dcmwrite"),
        ("deid", run_deid, "deid", "API: replace_identifiers, default recipe"),
    ):
        if tool not in tools:
            continue
        if installed(dist) is None:
            skipped[tool] = f"not installed (pip install {dist})"
            continue
        cases.append(Case(Measurement(tool, how, 1, n), runner, files, True, self_cpu))
    startup_cases: list[Case] = []
    if "cli" in tools:
        one = [files[0]]
        startup_cases = [
            Case(
                Measurement("python -c pass", "subprocess", 1, 1),
                interpreter_start,
                one,
                False,
                children_cpu,
            ),
            Case(
                Measurement("deid-gateway CLI, 1 file", "subprocess", 1, 1),
                cli_runner(1, corpus.root),
                one,
                False,
                children_cpu,
            ),
        ]
    rounds = measure_all(startup_cases + cases, workdir, args.repeats, args.budget)
    startup: dict[str, Any] = {"rounds": rounds}
    if startup_cases:
        startup.update(
            python_seconds=startup_cases[0].m.best,
            cli_one_file_seconds=startup_cases[1].m.best,
            cli_one_file_cpu_seconds=startup_cases[1].m.cpu_best,
        )
    return {"results": [c.m for c in cases], "skipped": skipped, "startup": startup}


def derived(results: list[Measurement], startup: dict[str, Any]) -> dict[str, Any]:
    def find(tool: str, jobs: int) -> Measurement | None:
        return next((m for m in results if m.tool == tool and m.jobs == jobs and m.samples), None)

    out: dict[str, Any] = dict(startup)
    floor = find(FLOOR, 1)
    for tool, key in ((CLI, "cli"), (GATEWAY, "in_process")):
        one, two = find(tool, 1), find(tool, 2)
        if one and two:
            out[f"{key}_speedup_jobs2"] = one.best / two.best
    cli1, gw1 = find(CLI, 1), find(GATEWAY, 1)
    if cli1 and gw1:
        out["cli_fixed_seconds"] = cli1.best - gw1.best
        if cli1.cpu_best is not None and gw1.cpu_best is not None:
            out["cli_fixed_cpu_seconds"] = cli1.cpu_best - gw1.cpu_best
    if gw1:
        out["gateway_ms_per_file"] = 1000 * gw1.best / gw1.files
        if gw1.cpu_best is not None:
            out["gateway_cpu_ms_per_file"] = 1000 * gw1.cpu_best / gw1.files
    if floor:
        out["floor_ms_per_file"] = 1000 * floor.best / floor.files
        if floor.cpu_best:
            out["floor_cpu_ms_per_file"] = 1000 * floor.cpu_best / floor.files
        if gw1:
            out["per_core_ratio_in_process"] = gw1.best / floor.best
            # each round's gateway time over the same round's floor: load that drifts between
            # rounds cancels out (best-of-best can pair a lucky floor with an unlucky gateway)
            paired = [g / f for g, f in zip(gw1.samples, floor.samples, strict=False)]
            out["paired_ratios_in_process"] = paired
            out["paired_ratio_median"] = statistics.median(paired)
            out["target_met"] = max(out["per_core_ratio_in_process"], out["paired_ratio_median"]) <= TARGET_PER_CORE
            if gw1.cpu_best is not None and floor.cpu_best:
                out["cpu_ratio_in_process"] = gw1.cpu_best / floor.cpu_best
    return out


def table(results: list[Measurement], extra: dict[str, Any], skipped: dict[str, str]) -> str:
    floor = next((m for m in results if m.tool == FLOOR and m.samples), None)
    header = (
        f"{'tool':<18} {'how':<40} {'jobs':>4} {'ok':>7} {'best s':>7} {'median s':>8} {'files/s':>8} "
        f"{'ratio':>6} {'per core':>8} {'cpu s':>6} {'cpu ratio':>9}"
    )
    lines = [header, "-" * len(header)]
    for m in results:
        ratio = f"{m.best / floor.best:6.2f}" if floor else "     -"
        per_core = f"{m.best * m.jobs / floor.best:8.2f}" if floor else "       -"
        cpu = f"{m.cpu_best:6.2f}" if m.cpu_best is not None else "     -"
        cpu_ratio = (
            f"{m.cpu_best / floor.cpu_best:9.2f}"
            if m.cpu_best is not None and floor and floor.cpu_best
            else "        -"
        )
        lines.append(
            f"{m.tool:<18} {m.how:<40} {m.jobs:>4} {f'{min(m.ok)}/{m.files}':>7} {m.best:>7.2f} "
            f"{m.median:>8.2f} {m.files_per_s:>8.1f} {ratio} {per_core} {cpu} {cpu_ratio}"
        )
    for tool, why in skipped.items():
        lines.append(f"{tool:<18} skipped: {why}")
    lines.append("")
    speedups = [
        f"{label} {extra[key]:.2f}x"
        for key, label in (("cli_speedup_jobs2", "CLI"), ("in_process_speedup_jobs2", "in-process"))
        if key in extra
    ]
    if speedups:
        lines.append("jobs 2 / jobs 1 speed-up (time jobs 1 / time jobs 2): " + ", ".join(speedups))
    if "python_seconds" in extra:
        lines.append(
            f"start-up: python -c pass {extra['python_seconds']:.2f} s; CLI on 1 file "
            f"{extra['cli_one_file_seconds']:.2f} s wall / {extra['cli_one_file_cpu_seconds']:.2f} s CPU"
        )
    if "cli_fixed_seconds" in extra:
        cpu = (
            f" / {extra['cli_fixed_cpu_seconds']:.2f} s CPU"
            if "cli_fixed_cpu_seconds" in extra
            else ""
        )
        lines.append(
            f"CLI minus in-process (jobs 1, whole corpus): {extra['cli_fixed_seconds']:.2f} s wall{cpu}"
        )
    if "gateway_ms_per_file" in extra:
        text = f"per file (jobs 1): gateway {extra['gateway_ms_per_file']:.2f} ms wall"
        if "gateway_cpu_ms_per_file" in extra:
            text += f" / {extra['gateway_cpu_ms_per_file']:.2f} ms CPU"
        if "floor_ms_per_file" in extra:
            text += f"; pydicom floor {extra['floor_ms_per_file']:.2f} ms wall"
            if "floor_cpu_ms_per_file" in extra:
                text += f" / {extra['floor_cpu_ms_per_file']:.2f} ms CPU"
        lines.append(text)
    if "target_met" in extra:
        verdict = "met" if extra["target_met"] else "NOT met"
        cpu = (
            f" (CPU {extra['cpu_ratio_in_process']:.2f}x)"
            if "cpu_ratio_in_process" in extra
            else ""
        )
        paired = extra["paired_ratios_in_process"]
        lines.append(
            f"same-round ratios (in-process jobs 1 / floor): median {extra['paired_ratio_median']:.2f}x, "
            f"{min(paired):.2f}-{max(paired):.2f}x over {len(paired)} round(s)"
        )
        lines.append(
            f"target <= {TARGET_PER_CORE}x the floor per core (in-process, jobs 1; best-of-best and "
            f"the same-round median must both hold): {extra['per_core_ratio_in_process']:.2f}x{cpu}, "
            f"median {extra['paired_ratio_median']:.2f}x -> {verdict}"
        )
    lines.append(
        "best of the runs (median beside it; the median is what a busy machine gives); ratio = tool seconds / pydicom read+write seconds; "
        "per core = ratio x jobs; cpu = CPU seconds of the process (jobs 1 only)"
    )
    return "\n".join(lines)


# -- profiling -------------------------------------------------------------------------------
def profile_gateway(
    files: list[Path],
    workdir: Path,
    top: int,
    dump: Path | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """cProfile of the in-process gateway (jobs 1); the top functions by own time."""
    run = gateway_runner(1)
    out = fresh(workdir / "out-profile")
    run(files[:WARMUP_FILES], out)
    fresh(out)
    profiler = cProfile.Profile()
    profiler.enable()
    run(files, out)
    profiler.disable()
    fresh(out)
    if dump:
        profiler.dump_stats(dump)
    stats = pstats.Stats(profiler)
    rows: list[dict[str, Any]] = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short(filename)}:{line}({func})",
                "gateway": "/gateway/" in filename,
                "ncalls": ncalls,
                "tottime": tottime,
                "cumtime": cumtime,
            }
        )
    total = max(r["cumtime"] for r in rows)
    text = io.StringIO()
    for title, key, only_gateway in (
        ("gateway functions by cumulative time", "cumtime", True),
        ("gateway functions by own time", "tottime", True),
        ("all functions by own time", "tottime", False),
    ):
        chosen = sorted(
            (r for r in rows if r["gateway"] or not only_gateway), key=lambda r: -r[key]
        )[:top]
        print(f"\n{title} (profiled run {total:.2f} s, {len(files)} files)", file=text)
        print(f"{'ncalls':>9} {'own s':>7} {'cum s':>7} {'cum %':>6}  function", file=text)
        for r in chosen:
            print(
                f"{r['ncalls']:>9} {r['tottime']:>7.3f} {r['cumtime']:>7.3f} {100 * r['cumtime'] / total:>5.1f}%  {r['function']}",
                file=text,
            )
    hot = sorted(rows, key=lambda r: -r["tottime"])[: top * 3]
    return text.getvalue(), hot


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/gateway/", "/lib/python"):
        if marker in filename:
            return (
                filename.split(marker, 1)[1]
                if marker != "/gateway/"
                else "gateway/" + filename.split(marker, 1)[1]
            )
    return filename


# -- main ------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=800, help="corpus size (default 800)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per tool; the median is reported (default 3)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=240,
        help="seconds for the timed rounds; no round starts that would end later (default 240)",
    )
    parser.add_argument("--seed", type=int, default=2, help="corpus seed (default 2)")
    parser.add_argument(
        "--jobs", type=int, nargs="+", default=[1, 2], help="gateway --jobs values (default 1 2)"
    )
    parser.add_argument(
        "--tools",
        type=lambda s: [t for t in s.split(",") if t],
        default=list(TOOLS),
        help=f"comma-separated subset of {','.join(TOOLS)} (default all; '' for none, "
        "e.g. with --cprofile)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the corpus and outputs go (default: a temp dir, removed)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="the results as JSON: on stdout instead of the table, or into FILE beside the table",
    )
    parser.add_argument(
        "--cprofile",
        type=int,
        nargs="?",
        const=15,
        default=0,
        metavar="N",
        help="also cProfile the in-process gateway and print the top N functions (default 15)",
    )
    parser.add_argument(
        "--cprofile-out", type=Path, help="with --cprofile: also dump the pstats file here"
    )
    args = parser.parse_args(argv)
    unknown = set(args.tools) - set(TOOLS)
    if unknown:
        parser.error(
            f"unknown tool(s): {', '.join(sorted(unknown))}; choose from {', '.join(TOOLS)}"
        )
    if args.repeats < 1 or args.files < 1:
        parser.error("--files and --repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.simplefilter("ignore")  # pydicom's value warnings on the test files: noise here
    os.environ["PYTHONWARNINGS"] = "ignore"
    os.environ["DEID_GATEWAY_KEY"] = TEST_KEY
    own_dir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="deid-bench-")) if own_dir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["DEID_GATEWAY_KEY_DIR"] = str(workdir / "keys")  # never the user's key folder
    try:
        from deid.logger import bot

        bot.level = -3  # deid: errors only
    except ImportError:
        pass
    try:
        started = time.perf_counter()
        load_before = os.getloadavg()[0]
        corpus_dir = workdir / "corpus"
        shutil.rmtree(corpus_dir, ignore_errors=True)
        corpus = build_corpus(corpus_dir, args.files, args.seed)
        log(
            f"corpus: {len(corpus.files)} files, {corpus.patients} patients, {corpus.studies} studies, "
            f"{corpus.series} series, {corpus.bytes / 1e6:.1f} MB in {corpus_dir} "
            f"({time.perf_counter() - started:.1f} s)"
        )
        run = run_all(args, corpus, workdir)
        results: list[Measurement] = run["results"]
        extra = derived(results, run["startup"])
        profile_text, hot = "", list[dict[str, Any]]()
        if args.cprofile:
            log("profiling the in-process gateway (jobs 1)...")
            profile_text, hot = profile_gateway(
                corpus.files, workdir, args.cprofile, args.cprofile_out
            )
        floor = next((m for m in results if m.tool == FLOOR and m.samples), None)
        report = {
            "profile": PROFILE,
            "statistic": "best of repeats (median also given)",
            "repeats": args.repeats,
            "load_average": {"before": load_before, "after": os.getloadavg()[0]},
            "corpus": {
                "files": len(corpus.files),
                "patients": corpus.patients,
                "studies": corpus.studies,
                "series": corpus.series,
                "bytes": corpus.bytes,
                "templates": corpus.templates,
                "seed": args.seed,
            },
            "environment": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                **{d: installed(d) for d in ("pydicom", "dicognito", "deid", "deid-gateway")},
            },
            "results": [m.as_dict(floor) for m in results],
            "skipped": run["skipped"],
            "derived": extra,
            "hot_spots": hot,
            "total_seconds": time.perf_counter() - started,
        }
        if args.json and args.json != "-":
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        if args.json == "-":
            print(json.dumps(report, indent=2))
        else:
            print(
                f"deid-gateway DICOM throughput, profile '{PROFILE}' (header path), "
                f"{len(corpus.files)} files, best of {extra['rounds']} runs, {os.cpu_count()} CPUs, "
                f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after"
            )
            print(table(results, extra, run["skipped"]))
            if profile_text:
                print(profile_text)
            print(f"\ntotal {time.perf_counter() - started:.0f} s")
        return 0
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
