"""Where the header path's time goes, stage by stage, against pydicom read + write.

    python benchmarks/dicom_stages.py [--files 800] [--passes 5] [--workdir DIR] [--profile basic]

On the ``_corpus.py`` corpus, in one process, each stage of the gateway (read, prepare, header
walk, markers, verification gate, store) and each half of the floor (``dcmread``,
``dcmwrite`` to a path) is timed with ``perf_counter`` around the call, per file, summed over
the corpus. No profiler: its overhead falls unevenly on Python-heavy and C-heavy stages.
Several passes; the table gives the median pass (and the fastest). Profile ``basic`` unless
``--profile`` says otherwise: ``--profile research`` measures the header path with Clean
Descriptors / Structured Content, i.e. the free-text engine on descriptors (the pixel stage is
never run here).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import build_corpus

TEST_KEY = "benchmark-test-key-not-a-secret-0123456"  # 40 characters, for benchmarks only
GATEWAY_STAGES = ("read", "prepare", "header walk", "markers", "verification gate", "store")
FLOOR_STAGES = ("dcmread", "dcmwrite to a path")


PROFILE = "basic"


def gateway_pass(files: list[Path], out: Path) -> dict[str, float]:
    from gateway.dicom.markers import add_markers
    from gateway.dicom.reader import read_dicom
    from gateway.pipeline import batch
    from gateway.pipeline.verify import needles_for, verify_release
    from gateway.profiles.loader import load_profile
    from gateway.stores import folder

    folder._MADE_DIRS.clear()  # a fresh output folder: its directories are made again
    batch.init_worker(batch.WorkerConfig(load_profile(PROFILE), out, out / "q", None))
    assert batch._WORKER is not None
    processor, store, _ = batch._WORKER
    deidentifier = processor.deidentifier
    totals = dict.fromkeys(GATEWAY_STAGES, 0.0)
    clock = time.perf_counter
    for path in files:
        t0 = clock()
        ds = read_dicom(path)
        t1 = clock()
        state = deidentifier.prepare(ds)
        t2 = clock()
        result = deidentifier.deidentify(ds, state)
        t3 = clock()
        add_markers(ds, processor.rules, result, False)
        t4 = clock()
        verify_release(ds, needles_for(result.needles, result.phi), processor.rules)
        t5 = clock()
        store.put_dicom(ds)
        t6 = clock()
        for stage, start, end in zip(GATEWAY_STAGES, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6), strict=True):
            totals[stage] += end - start
    return totals


def floor_pass(files: list[Path], out: Path) -> dict[str, float]:
    import pydicom

    out.mkdir(parents=True, exist_ok=True)
    totals = dict.fromkeys(FLOOR_STAGES, 0.0)
    clock = time.perf_counter
    for index, path in enumerate(files):
        t0 = clock()
        ds = pydicom.dcmread(path)
        t1 = clock()
        pydicom.dcmwrite(out / f"{index:06d}.dcm", ds, enforce_file_format=True)
        t2 = clock()
        totals["dcmread"] += t1 - t0
        totals["dcmwrite to a path"] += t2 - t1
    return totals


def measure(files: list[Path], workdir: Path, passes: int) -> dict[str, list[float]]:
    """ms per file for every stage, one value per pass (floor and gateway alternate)."""
    runs: list[tuple[str, Callable[[list[Path], Path], dict[str, float]]]] = [
        ("floor", floor_pass),
        ("gateway", gateway_pass),
    ]
    per_stage: dict[str, list[float]] = {s: [] for s in (*FLOOR_STAGES, *GATEWAY_STAGES)}
    for _ in range(passes):
        for name, run in runs:
            out = workdir / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            os.sync()  # the deleted output's writeback would otherwise land on this pass
            for stage, seconds in run(files, out).items():
                per_stage[stage].append(1000 * seconds / len(files))
            shutil.rmtree(out, ignore_errors=True)
    return per_stage


def report(per_stage: dict[str, list[float]], passes: int, count: int) -> str:
    lines = [f"ms per file, median of {passes} passes (fastest in brackets), {count} files, profile {PROFILE}", ""]
    for title, stages in (("deid-gateway", GATEWAY_STAGES), ("pydicom read+write", FLOOR_STAGES)):
        lines.append(title)
        for stage in stages:
            values = per_stage[stage]
            lines.append(f"  {stage:<20} {statistics.median(values):6.3f}  ({min(values):.3f})")
        total = [sum(per_stage[s][i] for s in stages) for i in range(passes)]
        lines.append(f"  {'total':<20} {statistics.median(total):6.3f}  ({min(total):.3f})")
        lines.append("")
    gateway = [sum(per_stage[s][i] for s in GATEWAY_STAGES) for i in range(passes)]
    floor = [sum(per_stage[s][i] for s in FLOOR_STAGES) for i in range(passes)]
    ratios = [g / f for g, f in zip(gateway, floor, strict=True)]
    lines.append(f"gateway / floor, pass by pass: {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}x)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=800)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--workdir", type=Path, help="where the corpus and outputs go (default: a temp dir)")
    parser.add_argument("--profile", default=PROFILE, help="bundled profile (default basic)")
    args = parser.parse_args()
    globals()["PROFILE"] = args.profile
    os.environ.setdefault("DEID_GATEWAY_KEY", TEST_KEY)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="deid-stages-"))
    try:
        corpus = workdir / "corpus"
        if not corpus.is_dir() or sum(1 for _ in corpus.rglob("*.dcm")) < args.files:
            shutil.rmtree(corpus, ignore_errors=True)
            build_corpus(corpus, args.files)
        files = sorted(corpus.rglob("*.dcm"))[: args.files]
        gateway_pass(files[:20], workdir / "warm-up")  # imports and caches, not per-file cost
        print(report(measure(files, workdir, args.passes), args.passes, len(files)))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
