"""Running the claims suite: jobs in subprocesses, per-run JSON, per-claim summaries and plots.

Layout::

    <results>/runs/<result id>.json   one finished run (stage): metrics, density, #RI, FLOPs, D monitor, seconds,
                                      the exact command and the provenance needed to repeat it (committed)
    <results>/<claim>.json, .png      mean and 95 % interval per arm, paired differences, verdicts, compute
    <outdir>/<run folders>            the degan run folders (not committed; re-made when a later job needs them)
    <outdir>/logs/<job id>.log        stdout and stderr of each job
    <outdir>/locks/<job id>.lock      held while a job runs (two suite processes never run the same job)

Idempotent: a result whose JSON exists with the same spec hash (command, data content, suite version) is not run
again; an interrupted job continues from its last checkpoint (every command gets ``--resume latest``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

from ..errors import DeganError
from ..lottery.experiment import _cpu_model
from ..fileio import atomic_path, read_json, write_json
from .claims import METRICS, PRIMARY, SUITE_VERSION, Claim, Job, common_args, jobs_for
from .stats import REPRODUCED, WITHIN, Interval, mean_interval, paired_difference, verdict, within_verdict

Log = Callable[[str], None]
REL_MARGIN = 0.10


def file_md5(path: str | Path) -> str:
    """MD5 of a file's bytes (identifies the data, wherever it lies)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class Suite:
    """The jobs of some claims for some seeds, and where their outputs go.

    Args:
        claims: the claims (:func:`degan.reproduce.claims.get_claims`).
        seeds: training seeds, >= 1 of them (>= 3 for an interval-based verdict).
        data: the CIFAR-10 subset ``.npz`` (``cifar10_prefix_subset.npz`` of the shared data).
        outdir: where run folders, logs and locks go.
        results: where per-run JSON and claim summaries go (committed).
        threads: torch threads per job (``OMP_NUM_THREADS``); results are bit-identical only at the same count.
        resolve_folder: ``fn(argv) -> Path``: the run folder a ``degan`` command line would use (its
            ``--dry-run``); the CLI passes an in-process one (:func:`degan.cli.dry_run_folder`); the default runs
            ``python -m degan.cli ... --dry-run`` in a subprocess.

    Raises:
        DeganError: the data file does not exist.
    """

    def __init__(self, claims: list[Claim], seeds: list[int], data: str | Path, outdir: str | Path,
                 results: str | Path, threads: int = 1, log: Log = print,
                 resolve_folder: Callable[[list[str]], Path] | None = None, arms: list[str] | None = None) -> None:
        self.data = Path(data)
        if not self.data.is_file():
            raise DeganError(f"--data {data}: no such file; the claims run on the shared CIFAR-10 subset, e.g. "
                             "--data ../shared/data/cifar10-subset/cifar10_prefix_subset.npz")
        if threads < 1:
            raise DeganError(f"--threads must be >= 1, got {threads}")
        self.claims, self.seeds, self.threads, self.log = claims, list(seeds), threads, log
        self.outdir, self.results = Path(outdir), Path(results)
        self.data_md5 = file_md5(self.data)
        self.jobs: dict[str, Job] = jobs_for(claims, self.seeds)
        self.wanted: set[str] | None = None  # result ids of the chosen arms (--arms); None = every result
        if arms:
            known = {a.name: a for c in claims for a in c.arms}
            unknown = [a for a in arms if a not in known]
            if unknown:
                raise DeganError(f"unknown arm(s) {', '.join(unknown)} for {', '.join(c.name for c in claims)}; "
                                 f"the arms are: {', '.join(known)} (degan reproduce --list)")
            self.wanted = {known[a].result.format(s=s) for a in arms for s in self.seeds}
        self._folders: dict[str, Path] = {}
        self.resolve_folder = resolve_folder or _dry_run_folder_subprocess

    # ----- identities and paths -----
    def spec(self, job: Job, stage: str) -> dict:
        """What makes a result: the command with placeholders, the data content, the stage, the suite version."""
        spec = {"command": job.command, "args": list(job.args), "stage": stage, "data_md5": self.data_md5,
                "suite_version": SUITE_VERSION, "threads": self.threads}
        if job.subdir:
            spec["subdir"] = job.subdir
        return spec

    def spec_hash(self, job: Job, stage: str) -> str:
        blob = json.dumps(self.spec(job, stage), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def result_path(self, rid: str) -> Path:
        return self.results / "runs" / f"{rid}.json"

    def result_done(self, job: Job, rid: str) -> bool:
        p = self.result_path(rid)
        if not p.is_file():
            return False
        try:
            return read_json(p).get("spec_hash") == self.spec_hash(job, job.stages[rid])
        except (OSError, ValueError):
            return False

    def _argv(self, job: Job, dry: bool = False) -> list[str]:
        args = []
        skip = False
        for a in job.args:
            if skip:
                skip = False
                continue
            if dry and a == "--dense-from":  # not part of the run's identity; the folder may not exist yet
                skip = True
                continue
            args.append(self._fill(a))
        if job.command == "branch":
            return ["branch", *args]
        outdir = self.outdir / job.subdir if job.subdir else self.outdir
        return [job.command, "--data", str(self.data), "--outdir", str(outdir), *common_args(), *args]

    def _fill(self, arg: str) -> str:
        while "{run:" in arg:
            start = arg.index("{run:")
            end = arg.index("}", start)
            arg = arg[:start] + str(self.folder(arg[start + 5:end])) + arg[end + 1:]
        return arg

    def folder(self, job_id: str) -> Path:
        """The run folder of a train/ticket job (from ``degan ... --dry-run``, in process)."""
        if job_id in self._folders:
            return self._folders[job_id]
        job = self.jobs[job_id]
        if job.command == "branch":
            return self.folder(job.parent)
        try:
            folder = self.resolve_folder(self._argv(job, dry=True))
        except DeganError as e:
            raise DeganError(f"cannot resolve the run folder of {job_id}: {e}") from None
        other = [j for j, f in self._folders.items() if f == folder]
        if other:  # two jobs in one run folder would resume each other's checkpoints
            raise DeganError(f"jobs {other[0]} and {job_id} resolve to the same run folder {folder}; give one of "
                             "them a subdir")
        self._folders[job_id] = folder
        return folder

    def stage_dir(self, job: Job, rid: str) -> Path:
        return self.folder(job.parent if job.command == "branch" else job.id) / job.stages[rid]

    def job_finished(self, job: Job) -> bool:
        """Every stage of the job has its ``done.json`` in the run folder."""
        try:
            return all((self.stage_dir(job, rid) / "done.json").is_file() for rid in job.stages)
        except (DeganError, KeyError):
            return False

    # ----- planning -----
    def plan(self) -> list[Job]:
        """The jobs to run, in order: those with a missing result (of the chosen arms, with ``arms``), and the
        unfinished jobs they need."""
        todo: dict[str, Job] = {}

        def need(job: Job) -> None:
            for dep in job.needs:
                d = self.jobs[dep]
                if dep not in todo and not self.job_finished(d):
                    need(d)
                    todo[dep] = d
        for job in self.jobs.values():
            if any(not self.result_done(job, rid) for rid in job.stages
                   if self.wanted is None or rid in self.wanted):
                need(job)
                todo.setdefault(job.id, job)
        order = list(self.jobs)
        return sorted(todo.values(), key=lambda j: order.index(j.id))

    # ----- running -----
    def run(self, workers: int = 1, dry_run: bool = False) -> int:
        """Run the planned jobs, ``workers`` at a time; collect results and write summaries as they finish.

        Returns:
            the number of jobs that failed (their logs name the error).
        """
        self.collect()
        todo = self.plan()
        if dry_run or not todo:
            for job in todo:
                self.log(f"would run {job.id}: degan {' '.join(self._argv(job, dry=True))}")
            self.log(f"{len(todo)} job(s) to run for {', '.join(c.name for c in self.claims)}, seeds "
                     f"{','.join(map(str, self.seeds))}")
            if not dry_run:  # a dry run writes nothing
                self.summarize()
            return 0
        self.log(f"[reproduce] {len(todo)} job(s), {workers} at a time, {self.threads} thread(s) each; logs in "
                 f"{self.outdir / 'logs'}")
        done: set[str] = {j.id for j in self.jobs.values() if j.id not in {t.id for t in todo}}
        failed: set[str] = set()
        pending = list(todo)
        running: dict = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while pending or running:
                for job in list(pending):
                    if len(running) >= workers:
                        break
                    if any(d in failed for d in job.needs):
                        pending.remove(job)
                        failed.add(job.id)
                        self.log(f"[reproduce] skip {job.id}: a job it needs failed")
                        continue
                    if all(d in done for d in job.needs):
                        pending.remove(job)
                        running[pool.submit(self.run_job, job)] = job
                if not running:
                    break
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    job = running.pop(fut)
                    ok = fut.result()
                    (done if ok else failed).add(job.id)
                    self.collect()
                    self.summarize()
        self.log(f"[reproduce] finished: {len(todo) - len(failed)} job(s) ok, {len(failed)} failed")
        return len(failed)

    def run_job(self, job: Job) -> bool:
        """Run one job in a subprocess with ``--resume latest``; True when every stage finished."""
        (self.outdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.outdir / "locks").mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "degan.cli", *self._argv(job), "--resume", "latest"]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                   DEGAN_REPRODUCE_JOB=job.id)
        with open(self.outdir / "locks" / f"{job.id}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log(f"[reproduce] {job.id} is running in another process; waiting for it")
                fcntl.flock(lock, fcntl.LOCK_EX)
                if self.job_finished(job):
                    return True
                self.log(f"[reproduce] {job.id} did not finish in the other process; running it here")
            self.log(f"[reproduce] start {job.id}: degan {' '.join(argv[3:])}")
            t0 = time.time()
            with open(self.outdir / "logs" / f"{job.id}.log", "a") as out:
                out.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
                out.flush()
                rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
            wall = time.time() - t0
        ok = rc == 0 and self.job_finished(job)
        self.log(f"[reproduce] {'done' if ok else 'FAILED'} {job.id} in {wall / 60:.1f} min"
                 + ("" if ok else f" (exit {rc}; see {self.outdir / 'logs' / (job.id + '.log')})"))
        if ok:
            for rid in job.stages:
                self._write_result(job, rid, wall_seconds=wall / len(job.stages))
        return ok

    # ----- results -----
    def collect(self) -> None:
        """Write the JSON of every finished stage whose result file is missing or stale."""
        for job in self.jobs.values():
            for rid in job.stages:
                if self.result_done(job, rid):
                    continue
                try:
                    finished = (self.stage_dir(job, rid) / "done.json").is_file()
                except DeganError:
                    finished = False  # a needed run folder does not exist yet
                if finished:
                    self._write_result(job, rid, wall_seconds=None)

    def _write_result(self, job: Job, rid: str, wall_seconds: float | None) -> None:
        stage = self.stage_dir(job, rid)
        done = read_json(stage / "done.json")
        run_root = stage.parent
        monitor = []
        if (stage / "monitor.jsonl").is_file():
            monitor = [json.loads(ln) for ln in (stage / "monitor.jsonl").read_text().splitlines() if ln.strip()]
        records = []
        if (stage / "metrics.jsonl").is_file():
            records = [json.loads(ln) for ln in (stage / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        env = read_json(run_root / "env.json") if (run_root / "env.json").is_file() else {}
        argv = ["degan", *self._argv(job), "--resume", "latest"]
        keep = ("level", "density_G", "density_D", "sparsity_G", "sparsity_D", "kimg", "step", "real_images_shown",
                "train_seconds", "eval_seconds", "costs", "metrics", "ada", "lecam", "variant", "branch")
        out = {
            "result": rid, "job": job.id, "seed": job.seed, "stage": job.stages[rid],
            "spec": self.spec(job, job.stages[rid]), "spec_hash": self.spec_hash(job, job.stages[rid]),
            "command": " ".join(a if " " not in a else repr(a) for a in argv),
            **{k: done[k] for k in keep if k in done},
            "metric_records": [{k: v for k, v in r.items() if k not in ("timestamp",)} for r in records],
            "monitor_last": monitor[-1] if monitor else None,
            "monitor_max_gap": max((m.get("gap") or 0.0 for m in monitor), default=None),
            "job_wall_seconds": None if wall_seconds is None else round(wall_seconds, 1),
            "provenance": {"degan_commit": _git_commit(), "torch": env.get("packages", {}).get("torch"),
                           "torch_threads": env.get("torch_threads"), "repeat": env.get("repeat"),
                           "cpu": _cpu_model(), "platform": env.get("platform"), "python": env.get("python"),
                           "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        }
        if "dynamic" in done:
            d = done["dynamic"]
            out["dynamic"] = {"events": d.get("events"), "fids": d.get("fids"),
                              "dense_phase_at_end": d.get("dense_phase_at_end")}
        write_json(self.result_path(rid), out)
        self.log(f"[reproduce] result {rid}: " + ", ".join(
            f"{m} {v['value']:.4g}" for m, v in (done.get("metrics") or {}).items()))

    # ----- summaries -----
    def summarize(self) -> list[dict]:
        """Write ``<claim>.json`` and ``<claim>.png`` for every claim from the result files present."""
        return [summarize_claim(c, self.results, self.seeds) for c in self.claims]


def _dry_run_folder_subprocess(argv: list[str]) -> Path:
    """The run folder of a degan command line, from ``python -m degan.cli ARGV --dry-run`` in a subprocess.

    Raises:
        DeganError: the command fails or prints no run folder.
    """
    res = subprocess.run([sys.executable, "-m", "degan.cli", *argv, "--dry-run"], capture_output=True, text=True)
    return parse_run_folder(res.returncode, res.stdout + res.stderr)


def parse_run_folder(exit_code: int, output: str) -> Path:
    """The ``# run folder: PATH`` line of a ``--dry-run`` output.

    Raises:
        DeganError: a non-zero exit code or no such line (the output's end is in the message).
    """
    lines = [ln for ln in output.splitlines() if ln.startswith("# run folder: ")]
    if exit_code != 0 or not lines:
        raise DeganError(output.strip()[-500:])
    return Path(lines[-1][len("# run folder: "):])


def load_results(results: str | Path) -> dict[str, dict]:
    """Every per-run result JSON under ``<results>/runs`` by result id."""
    folder = Path(results) / "runs"
    return {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def _metric(r: dict, name: str) -> float | None:
    m = (r.get("metrics") or {}).get(name)
    return None if m is None or m.get("value") is None else float(m["value"])


def summarize_claim(claim: Claim, results: str | Path, seeds: list[int] | None = None) -> dict:
    """Mean and 95 % interval per arm, paired differences and verdicts of one claim; writes JSON and a plot.

    Every result file present is used (``seeds`` only lists the seeds asked for, to name the missing runs).
    """
    runs = load_results(results)
    arms: dict = {}
    values: dict = {}
    missing: list[str] = []
    core_seconds = 0.0
    for arm in claim.arms:
        per_seed = {}
        rows = {}
        for rid, r in runs.items():
            if r.get("seed") is None or rid != arm.result.format(s=r["seed"]):
                continue
            rows[r["seed"]] = r
        for s in seeds or []:
            if s not in rows:
                missing.append(arm.result.format(s=s))
        entry: dict = {"label": arm.label, "results": {s: r["result"] for s, r in sorted(rows.items())}}
        for name in (PRIMARY, *[m for m in METRICS if m != PRIMARY]):
            vals = {s: _metric(r, name) for s, r in rows.items() if _metric(r, name) is not None}
            if name == PRIMARY:
                per_seed = vals
            entry[name] = {"per_seed": dict(sorted(vals.items())),
                           **(mean_interval(vals.values()).to_dict() if vals else {"n": 0})}
        for key in ("density_G", "density_D", "real_images_shown"):
            xs = [r[key] for r in rows.values() if r.get(key) is not None]
            entry[key] = sum(xs) / len(xs) if xs else None
        flops = [r["costs"].get("train_flops_effective") for r in rows.values() if isinstance(r.get("costs"), dict)]
        flops_dense = [r["costs"].get("train_flops_dense") for r in rows.values() if isinstance(r.get("costs"), dict)]
        entry["costs"] = {"train_flops_density_weighted": _mean(flops), "train_flops_dense": _mean(flops_dense)}
        gaps = [r["monitor_last"].get("gap") for r in rows.values() if r.get("monitor_last")]
        entry["monitor_gap_last"] = _mean(gaps)
        entry["monitor_acc_train_last"] = _mean([r["monitor_last"].get("acc_train") for r in rows.values()
                                                 if r.get("monitor_last")])
        entry["monitor_acc_heldout_last"] = _mean([r["monitor_last"].get("acc_heldout") for r in rows.values()
                                                   if r.get("monitor_last")])
        secs = [(r.get("train_seconds") or 0) + (r.get("eval_seconds") or 0) for r in rows.values()]
        entry["seconds_mean"] = _mean(secs)
        core_seconds += sum(s * (r["provenance"].get("torch_threads") or 1) for s, r in zip(secs, rows.values()))
        arms[arm.name] = entry
        values[arm.name] = per_seed
    tests = []
    for t in claim.tests:
        a, b = values.get(t.arm, {}), values.get(t.baseline, {})
        row = {"arm": t.arm, "baseline": t.baseline, "expect": t.expect, "statement": t.statement,
               "metric": PRIMARY}
        try:
            diff, shared = paired_difference(a, b)
        except ValueError:
            row.update(diff=None, seeds=[], verdict="not run" if t.expect else None)
            tests.append(row)
            continue
        base_mean = arms[t.baseline][PRIMARY].get("mean")
        if t.expect == WITHIN:  # the arm's mean against the baseline's own interval (not a paired test)
            b = arms[t.baseline][PRIMARY]
            arm_mean = arms[t.arm][PRIMARY].get("mean")
            row.update(diff=diff.to_dict(), seeds=shared, arm_mean=arm_mean,
                       baseline_interval=[b.get("low"), b.get("high")],
                       verdict=within_verdict(arm_mean, Interval(b.get("mean"), b.get("low"), b.get("high"),
                                                                 b.get("n", 0), b.get("std")),
                                              arm_n=arms[t.arm][PRIMARY].get("n", 0)))
            tests.append(row)
            continue
        margin = REL_MARGIN * abs(base_mean) if base_mean is not None else 0.0
        row.update(diff=diff.to_dict(), seeds=shared, margin=margin, rel_margin=REL_MARGIN,
                   verdict=verdict(diff, t.expect, margin) if t.expect else None)
        tests.append(row)
    searches = summarize_searches(claim, runs)
    summary = {"claim": claim.name, "title": claim.title, "paper": claim.paper, "metric": PRIMARY,
               "metrics": [PRIMARY, *[m for m in METRICS if m != PRIMARY]],
               "interval": "Student t 95 % over seeds; paired differences over shared seeds",
               "arms": arms, "tests": tests, "missing": missing, "searches": searches,
               "compute_core_seconds": round(core_seconds, 1),
               "reproduced": [t["statement"] for t in tests if t.get("verdict") == REPRODUCED]}
    out = Path(results)
    write_json(out / f"{claim.name}.json", summary)
    with contextlib.suppress(Exception):  # a plot failure must not lose the summary
        plot_claim(summary, out / f"{claim.name}.png")
    return summary


def summarize_searches(claim: Claim, runs: dict[str, dict]) -> dict:
    """The compute of each ticket search of ``claim`` (:class:`~degan.reproduce.claims.Search`), per seed: #RI and
    training FLOPs (density-weighted, ``costs.train_flops_effective``) summed over every level the search trained,
    and the ratio to the baseline search on the same seed. A seed counts only when every level of the search has
    its result file; its FLOPs are None (and it has no FLOPs ratio) when a level lacks its FLOP count.

    Returns:
        ``{arm: {"per_seed": {seed: {"real_images_shown", "train_flops", "levels"}}, "baseline", "at_most",
        "ratio_ri": {seed: r}, "ratio_flops": {seed: r}, "ratio_flops_max", "cheap_enough"}}``; ``cheap_enough`` is
        True when every seed's FLOPs ratio is at most ``at_most``, None without a ratio.
    """
    out: dict = {}
    seeds = sorted({r["seed"] for r in runs.values() if r.get("seed") is not None})
    for sr in claim.searches:
        per_seed: dict = {}
        for seed in seeds:
            rows = [runs.get(pat.format(s=seed)) for pat in sr.results]
            if any(r is None for r in rows):
                continue
            flops = [(r.get("costs") or {}).get("train_flops_effective") for r in rows]
            per_seed[seed] = {
                "real_images_shown": sum(int(r.get("real_images_shown") or 0) for r in rows),
                "train_flops": None if any(f is None for f in flops) else sum(float(f) for f in flops),
                "levels": [r["result"] for r in rows]}
        out[sr.arm] = {"per_seed": per_seed, "baseline": sr.baseline, "at_most": sr.at_most}
    for arm, entry in out.items():
        base = out.get(entry["baseline"] or "", {}).get("per_seed", {})
        shared = sorted(set(entry["per_seed"]) & set(base))
        entry["ratio_ri"] = {s: entry["per_seed"][s]["real_images_shown"] / base[s]["real_images_shown"]
                             for s in shared if base[s]["real_images_shown"]}
        entry["ratio_flops"] = {s: entry["per_seed"][s]["train_flops"] / base[s]["train_flops"]
                                for s in shared if base[s]["train_flops"] and entry["per_seed"][s]["train_flops"]
                                is not None}
        ratios = list(entry["ratio_flops"].values())
        entry["ratio_flops_max"] = max(ratios) if ratios else None
        entry["cheap_enough"] = (None if not ratios or entry["at_most"] is None
                                 else all(r <= entry["at_most"] for r in ratios))
    return out


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def plot_claim(summary: dict, path: Path) -> None:
    """Per arm: each seed's KID and FID (dots) and the mean with its 95 % interval (bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = summary["metrics"]
    arms = [a for a in summary["arms"] if summary["arms"][a][names[0]].get("n")]
    if not arms:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(max(6.0, 0.9 * len(arms) + 3), 4.2), constrained_layout=True,
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        for i, arm in enumerate(arms):
            m = summary["arms"][arm][name]
            ys = list(m.get("per_seed", {}).values())
            ax.scatter([i] * len(ys), ys, s=14, color="0.45", zorder=2)
            if m.get("low") is not None:
                ax.errorbar([i], [m["mean"]], yerr=[[m["mean"] - m["low"]], [m["high"] - m["mean"]]], fmt="o",
                            color="C0", capsize=4, zorder=3)
            elif m.get("mean") is not None:
                ax.plot([i], [m["mean"]], "o", color="C0")
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels(arms, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(f"{name} (lower is better)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{summary['claim']}: {summary['title']}\nmean and 95 % t interval over seeds (dots: seeds)",
                 fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ----- the README table --------------------------------------------------------------------------------------------

README_BEGIN = "<!-- claims-table:begin (degan reproduce --summarize --readme README.md) -->"
README_END = "<!-- claims-table:end -->"


def _fmt(m: dict | None, digits: int = 4) -> str:
    if not m or m.get("mean") is None:
        return "—"
    if m.get("low") is None:
        return f"{m['mean']:.{digits}f} (1 seed)"
    return f"{m['mean']:.{digits}f} ± {m['half_width']:.{digits}f} (n={m['n']})"


def _acc(arm: dict) -> str:
    """D's accuracy on training vs held-out reals at the end (mean over seeds) from the overfitting monitor."""
    tr, ho = arm.get("monitor_acc_train_last"), arm.get("monitor_acc_heldout_last")
    return "—" if tr is None or ho is None else f"{tr:.0%} / {ho:.0%}"


def _search_fmt(sr: dict) -> str:
    """Mean #RI (kimg) and training FLOPs of a search over its seeds."""
    ps = list((sr.get("per_seed") or {}).values())
    if not ps:
        return "—"
    ri = sum(p["real_images_shown"] for p in ps) / len(ps) / 1000
    fl = _mean(p["train_flops"] for p in ps)
    return f"{ri:,.0f} kimg, " + ("FLOPs unknown" if fl is None else f"{fl:.3g} FLOPs") + f" (n={len(ps)})"


def claims_table(summaries: list[dict]) -> str:
    """Markdown: one row per test of every claim (arm and baseline mean ± 95 % half-width, the paired difference
    with its interval, the verdict) and the runs still missing."""
    lines = ["| claim | test | arm: kid1k_test | baseline: kid1k_test | paired difference [95 % CI] | verdict "
             "| D acc. train / held-out (arm, baseline) |",
             "|---|---|---|---|---|---|---|"]
    for s in summaries:
        for t in s["tests"]:
            arm, base = s["arms"].get(t["arm"], {}), s["arms"].get(t["baseline"], {})
            metric = s.get("metric", PRIMARY)
            d = t.get("diff")
            diff = "—" if not d else (f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" if d.get("low") is not None
                                      else f"{d['mean']:+.4f} (1 seed)")
            v = t.get("verdict") or "reported"
            if t.get("expect") == "match" and d:
                v += f" (margin {t['margin']:.4f})"
            if t.get("expect") == WITHIN and d:
                lo, hi = t.get("baseline_interval") or (None, None)
                diff = (f"arm mean {t['arm_mean']:.4f} vs baseline interval "
                        + (f"[{lo:.4f}, {hi:.4f}]" if hi is not None else "— (1 seed)"))
            lines.append(f"| {s['claim']} | {t['statement']} | {t['arm']}: {_fmt(arm.get(metric))} | "
                         f"{t['baseline']}: {_fmt(base.get(metric))} | {diff} | {v} | {_acc(arm)}, {_acc(base)} |")
        for arm, sr in (s.get("searches") or {}).items():
            base = (s.get("searches") or {}).get(sr.get("baseline") or "")
            if base is None or sr.get("at_most") is None:
                continue
            ratios = sr.get("ratio_flops") or {}
            v = ("not run" if not ratios else "reproduced" if sr.get("cheap_enough") else "not reproduced")
            diff = ("—" if not ratios else f"FLOPs x{_mean(ratios.values()):.2f} (max x{sr['ratio_flops_max']:.2f}), "
                    f"#RI x{_mean((sr.get('ratio_ri') or {}).values()):.2f}")
            lines.append(f"| {s['claim']} | the {arm} search costs at most {sr['at_most']:g}x the {sr['baseline']} "
                         f"search (training FLOPs, every level) | {arm}: {_search_fmt(sr)} | "
                         f"{sr['baseline']}: {_search_fmt(base)} | {diff} | {v} | — |")
    missing = list(dict.fromkeys(m for s in summaries for m in s.get("missing", [])))  # shared arms once
    if missing:
        lines += ["", f"Runs not finished yet ({len(missing)}): " + ", ".join(missing[:40])
                  + (" ..." if len(missing) > 40 else "")]
    return "\n".join(lines)


def update_readme(path: str | Path, table: str) -> None:
    """Replace the text between :data:`README_BEGIN` and :data:`README_END` in ``path`` (atomically).

    Raises:
        DeganError: the file lacks the markers.
    """
    from ..fileio import write_text

    text = Path(path).read_text()
    if README_BEGIN not in text or README_END not in text:
        raise DeganError(f"{path} has no claims-table markers; add the two lines\n{README_BEGIN}\n{README_END}")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    write_text(path, f"{head}{README_BEGIN}\n{table}\n{README_END}{tail}")
