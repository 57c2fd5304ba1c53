"""Kill battery: kill `degan train` and `degan ticket` at random moments, resume with `--resume latest` until they
finish, and check that the result is what an uninterrupted run gives (docs/troubleshooting.md).

For each command (a short `degan train` and a `degan ticket --levels 2`, both with DiffAugment, a checkpoint every
two iterations, the D monitor and, when the Inception weights are installed, KID on a few samples):

1. the command runs once uninterrupted (the reference); its wall time T and the moments its files appear (the
   reference timeline) are recorded;
2. the same command (always with ``--resume latest``) runs again in another output folder and is sent the signal at
   ``--kills`` seeded random moments m_1 < ... < m_k, uniform over T. Attempt i picks up where attempt i-1 left the
   run folder (its newest checkpoint, or the next stage): once the resumed process has got back there (it rewrote
   that stage's ``density.json``, or ``data.json``), it is signalled after the reference's time from that point to
   m_i. So the kills land where the reference run was at those moments: start-up and repair, stage setup, training,
   checkpoint and sample-grid writes, the D monitor, evaluation, the report, between levels. What each kill
   interrupted is recorded twice: the reference file written last before m_i (``at_reference``) and what the run
   folder shows right after the kill (``found``: unfinished stage, phase, last checkpoint, temporary files of
   cut-off writes);
3. after the last kill the command is resumed until it exits with status 0, then checked:

   - ``completed``: exit status 0, every stage has ``done.json``, ``report.md`` exists;
   - ``files_load``: every ``.pt`` loads with ``torch.load(weights_only=True)``, every ``.safetensors`` loads, every
     ``.json`` parses, every line of every ``.jsonl`` parses;
   - ``no_temp_files``: no ``.<name>.<random>.tmp`` / ``.tmp<random>`` (or any other ``*.tmp*``) file is left;
   - ``same_files``: the same file names as the reference (checkpoints kept, sample grids, plots);
   - ``steps_once``: ``stats.jsonl``, ``monitor.jsonl`` and ``metrics.jsonl`` of every stage hold the same steps
     (``cur_nimg`` / metric names) as the reference, none twice, none missing;
   - ``logs_identical``: and the same values (wall-clock fields aside);
   - ``G_ema_identical``: every stage's ``G_ema.safetensors`` (and ``masks.safetensors``, the last checkpoint's
     G, D, G_ema and optimizer tensors) equals the reference bit for bit.

Reference and interrupted runs use the same thread count (``--threads``, 1 by default): bit-identity needs it.

    python benchmarks/kill_battery.py --out results.json                       # SIGKILL, 20 kills per command
    python benchmarks/kill_battery.py --out results.json --signal TERM --kills 3
    python benchmarks/kill_battery.py --out results.json --signal KILL,TERM,INT --kills 20,3,3
    python benchmarks/kill_battery.py --out r.json --commands ticket --seed 7 --workdir /tmp/kb --keep

Exit status 0 when every check of every battery passed, 1 otherwise. ``tests/test_kill_battery.py`` (slow) runs the
same functions with fewer kills.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Wall-clock fields: the only ones allowed to differ between the reference and the interrupted run.
TIME_KEYS = ("timestamp", "wall_seconds", "sec_per_kimg", "train_seconds", "eval_seconds", "seconds")
#: Temporary files of cut-off writes (degan.fileio._STALE_TEMP) and anything else with ``.tmp`` in its name.
TEMP = re.compile(r"^\..+\.tmp$|^\.tmp[A-Za-z0-9_]{6,}$|\.tmp")
STEP_LOGS = ("stats.jsonl", "monitor.jsonl", "metrics.jsonl")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


def have_inception() -> bool:
    try:
        from degan.errors import DeganError
        from degan.metrics import find_inception_weights

        find_inception_weights()
    except (ImportError, DeganError):
        return False
    return True


def command_args(kind: str, data: str, metrics: str, threads: int) -> list[str]:
    """The `degan` arguments of one battery command (``train`` or ``ticket``), without ``--outdir``: a 16 px DCGAN
    at width 0.25 on ``data``, DiffAugment, 0.2 kimg per level (25 iterations of 8 images), a checkpoint every 16
    images (2 iterations), stats every 8, the D monitor every 32 (so it coincides with checkpoints), ``metrics`` on
    24 samples."""
    args = [kind, "--data", data, "--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8",
            "--kimg", "0.2", "--snap", "0.016", "--augment", "diffaug:color,translation,cutout",
            "--metrics", metrics, "--num-gen", "24", "--no-progress", "--threads", str(threads),
            "--set", "train.log_kimg=0.008", "--set", "eval.monitor_every_kimg=0.032"]
    if kind == "ticket":
        args += ["--levels", "2"]
    return args


def _env(threads: int, cache: Path) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), DEGAN_CACHE=str(cache),
                PYTHONUNBUFFERED="1")


def _start(args: list[str], outdir: Path, env: dict, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "degan.cli", *args, "--outdir", str(outdir)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def _run_root(outdir: Path) -> Path | None:
    dirs = [p for p in outdir.iterdir() if p.is_dir()] if outdir.is_dir() else []
    return dirs[0] if len(dirs) == 1 else None


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------------------------------
# the reference run


def run_reference(args: list[str], outdir: Path, env: dict, timeout: float = 900.0, poll: float = 0.05) -> dict:
    """Run the command uninterrupted, polling its output folder for the moment each file first appears.

    Returns:
        ``{"wall_seconds", "startup_seconds", "timeline": [[seconds, relative path], ...], "run": path}``.

    Raises:
        RuntimeError: the command failed.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    log_path = outdir.parent / f"{outdir.name}.log"
    t0 = time.perf_counter()
    proc = _start(args, outdir, env, log_path)
    seen: dict[str, float] = {}
    while proc.poll() is None:
        now = time.perf_counter() - t0
        for p in _files(outdir):
            rel = str(p.relative_to(outdir))
            if rel not in seen and not TEMP.search(p.name):
                seen[rel] = now
        if now > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"reference run of `degan {args[0]}` took over {timeout:.0f} s")
        time.sleep(poll)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"reference run of `degan {args[0]}` failed (exit {proc.returncode}):\n{_tail(log_path)}")
    for p in _files(outdir):
        seen.setdefault(str(p.relative_to(outdir)), wall)
    root = _run_root(outdir)
    timeline = sorted(([round(t, 3), "/".join(Path(r).parts[1:])] for r, t in seen.items()), key=lambda e: e[0])
    startup = min((t for t, _ in timeline), default=0.0)
    return {"wall_seconds": round(wall, 3), "startup_seconds": round(startup, 3), "timeline": timeline,
            "run": str(root)}


# ---------------------------------------------------------------------------------------------------------------------
# where a kill landed


def _stages(root: Path, kind: str) -> list[str]:
    return ["level_0"] if kind == "train" else ["level_0", "level_1", "level_2"]


def forensics(outdir: Path, kind: str) -> dict:
    """What an interrupted run folder shows: the first unfinished stage and its state, and the temporary files of
    cut-off writes (before the next resume repairs them)."""
    root = _run_root(outdir)
    if root is None:
        return {"phase": "start-up (no run folder yet)"}
    temps = [str(p.relative_to(root)) for p in root.rglob("*") if TEMP.search(p.name)]
    out: dict = {"temps": temps} if temps else {}
    if not (root / "init.pt").is_file():
        out["phase"] = "start-up (run folder being prepared)"
        return out
    for name in _stages(root, kind):
        st = root / name
        if (st / "done.json").is_file():
            continue
        out["stage"] = name
        ckpts = sorted((st / "checkpoints").glob("ckpt-*.pt")) if st.is_dir() else []
        if not st.is_dir():
            out["phase"] = "between levels (pruning, before the stage starts)" if name != "level_0" else "start-up"
        elif not ckpts:
            out["phase"] = "stage setup (masks, previews, first checkpoint)"
        elif (st / "G_ema.safetensors").is_file():
            lines = len((st / "metrics.jsonl").read_text().splitlines()) if (st / "metrics.jsonl").is_file() else 0
            out["phase"] = f"after training: evaluation ({lines} metric record(s) written)"
        else:
            out["phase"] = "training"
        if ckpts:
            out["last_checkpoint"] = ckpts[-1].name
        return out
    out["phase"] = "report writing / exit (every stage done)" if not (root / "report.md").is_file() else \
        "after the report (exiting)"
    return out


def at_reference(timeline: list, moment: float) -> str:
    """The reference file written last before ``moment`` seconds (``"start-up"`` before the first one)."""
    before = [name for t, name in timeline if t <= moment]
    return before[-1] if before else "start-up"


# ---------------------------------------------------------------------------------------------------------------------
# checks


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not any(k.endswith(t) for t in TIME_KEYS)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _load_all(root: Path) -> list[str]:
    """Every .pt / .safetensors / .json / .jsonl under ``root`` that does not load or parse (empty = all fine)."""
    import torch
    from safetensors.torch import load_file

    bad = []
    for p in _files(root):
        try:
            if p.suffix == ".pt":
                torch.load(p, map_location="cpu", weights_only=True)
            elif p.suffix == ".safetensors":
                load_file(str(p))
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".jsonl":
                for line in p.read_text().splitlines():
                    json.loads(line)
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            bad.append(f"{p.relative_to(root)}: {type(e).__name__}: {str(e)[:120]}")
    return bad


def _log_keys(path: Path) -> list:
    recs = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    return [r.get("cur_nimg", r.get("metric")) for r in recs]


def _tensors_equal(a: dict, b: dict) -> list[str]:
    import torch

    diff = []
    if a.keys() != b.keys():
        return [f"keys differ: {sorted(set(a) ^ set(b))[:5]}"]
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, dict) and isinstance(y, dict):
            diff += [f"{k}.{d}" for d in _tensors_equal(x, y)]
        elif torch.is_tensor(x) and torch.is_tensor(y):
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                diff.append(str(k))
        elif isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            if len(x) != len(y):
                diff.append(str(k))
            else:
                diff += [f"{k}[{i}]" for i, (u, v) in enumerate(zip(x, y))
                         if _tensors_equal({0: u}, {0: v})]
        elif x != y and not (isinstance(x, float) and x != x and y != y):
            diff.append(str(k))
    return diff


def check_run(ref_root: Path, root: Path | None, kind: str, final_rc: int | None) -> dict:
    """The checks of a resumed run against the reference; each entry ``{"passed": bool, ...details}``."""
    import torch
    from safetensors.torch import load_file

    checks: dict = {}
    stages = _stages(ref_root, kind)
    if root is None:
        return {"completed": {"passed": False, "detail": "no run folder"}}
    missing = [s for s in stages if not (root / s / "done.json").is_file()]
    checks["completed"] = {"passed": final_rc == 0 and not missing and (root / "report.md").is_file(),
                           "exit_status": final_rc, "unfinished": missing}
    bad = _load_all(root)
    checks["files_load"] = {"passed": not bad, "failures": bad}
    temps = [str(p.relative_to(root)) for p in root.rglob("*") if TEMP.search(p.name)]
    checks["no_temp_files"] = {"passed": not temps, "left": temps}
    names = lambda r: {str(p.relative_to(r)) for p in _files(r) if not TEMP.search(p.name)}  # noqa: E731
    ref_names, names_now = names(ref_root), names(root)
    checks["same_files"] = {"passed": ref_names == names_now, "missing": sorted(ref_names - names_now),
                            "extra": sorted(names_now - ref_names)}
    steps, logs = [], []
    for s in stages:
        for log in STEP_LOGS:
            a, b = ref_root / s / log, root / s / log
            if not a.is_file() and not b.is_file():
                continue
            ka, kb = _log_keys(a), _log_keys(b)
            if ka != kb:
                dup = sorted({k for k in kb if kb.count(k) > 1}, key=str)
                steps.append(f"{s}/{log}: duplicated {dup}, missing {sorted(set(ka) - set(kb), key=str)}, "
                             f"{len(kb)} records vs {len(ka)}")
            elif [_strip(json.loads(x)) for x in a.read_text().splitlines()] != \
                    [_strip(json.loads(x)) for x in b.read_text().splitlines()]:
                logs.append(f"{s}/{log}")
    checks["steps_once"] = {"passed": not steps, "differences": steps}
    checks["logs_identical"] = {"passed": not steps and not logs, "differ": logs}
    diffs = []
    for s in stages:
        for name in ("G_ema.safetensors", "masks.safetensors"):
            a, b = ref_root / s / name, root / s / name
            if not b.is_file():
                diffs.append(f"{s}/{name} missing")
                continue
            diffs += [f"{s}/{name}:{k}" for k in _tensors_equal(load_file(str(a)), load_file(str(b)))]
        ca = sorted((ref_root / s / "checkpoints").glob("ckpt-*.pt"))
        cb = sorted((root / s / "checkpoints").glob("ckpt-*.pt"))
        if ca and cb:
            sa = torch.load(ca[-1], map_location="cpu", weights_only=True)["state"]
            sb = torch.load(cb[-1], map_location="cpu", weights_only=True)["state"]
            diffs += [f"{s}/checkpoints/{cb[-1].name}:{net}.{k}" for net in ("G", "D", "G_ema", "opt_G", "opt_D")
                      for k in _tensors_equal(sa[net], sb[net])]
    checks["G_ema_identical"] = {"passed": not diffs, "differences": diffs[:20]}
    return checks


# ---------------------------------------------------------------------------------------------------------------------
# one battery


def resume_anchor(outdir: Path, kind: str, ref: dict) -> tuple[str | None, float]:
    """Where the next attempt picks up, as ``(anchor, reference time)``: the file the resumed process rewrites when
    it has got back to that point (``None`` = its start), and the moment of the reference run it then corresponds
    to.

    - nothing kept yet (no ``init.pt``): the process start, reference time 0;
    - an unfinished stage that has begun: its ``density.json`` (written after the checkpoint is loaded); the
      reference time of its newest checkpoint (or of its ``density.json`` when it has none);
    - between stages, or every stage done: ``data.json`` (rewritten by every command when it prepares the run folder;
      finished stages are skipped right after; ``config.yaml`` is rewritten only when a stage trains); the reference
      time of the last finished stage's ``done.json``.
    """
    root = _run_root(outdir)
    if root is None or not (root / "init.pt").is_file():
        return None, 0.0
    times = {name: t for t, name in ref["timeline"]}
    last_done = 0.0
    for name in _stages(root, kind):
        st = root / name
        if (st / "done.json").is_file():
            last_done = times.get(f"{name}/done.json", last_done)
            continue
        if not (st / "density.json").is_file():
            return "data.json", last_done
        t = times.get(f"{name}/density.json", last_done)
        ckpts = sorted((st / "checkpoints").glob("ckpt-*.pt"))
        if ckpts:  # the reference time of that checkpoint (or of the newest one seen before it)
            nimg = int(ckpts[-1].stem.split("-")[1])
            for tt, ref_name in ref["timeline"]:
                m = re.fullmatch(rf"{name}/checkpoints/ckpt-(\d+)\.pt", ref_name)
                if m and int(m.group(1)) <= nimg:
                    t = max(t, tt)
        return f"{name}/density.json", t
    return "data.json", last_done


def _wait_for_anchor(proc: subprocess.Popen, path: Path | None, since: float, timeout: float) -> bool:
    """Wait until ``path`` is (re)written after ``since`` (wall clock) or the process exits; True if it was."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            if path is not None and path.stat().st_mtime >= since:
                return True
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def kill_battery(args: list[str], ref: dict, outdir: Path, env: dict, *, kills: int, sig: str = "KILL",
                 seed: int = 0, max_final_tries: int = 5, timeout: float = 900.0,
                 log=lambda msg: None) -> dict:
    """Run ``args`` (with ``--resume latest``) into ``outdir``, signal it at ``kills`` random moments of the
    reference run, resume it until it finishes, check it against the reference ``ref`` (:func:`run_reference`).

    The moments are seeded, uniform over the reference's wall time T and sorted. Attempt i starts where attempt
    i-1 left the run folder (:func:`resume_anchor`): once the resumed process has got back there (it rewrote the
    anchor file), it is signalled after the reference's time from that point to moment i. So the kills land where
    the reference run was at those moments (start-up, stage setup, training, checkpoint and grid writes, the D
    monitor, evaluation, the report, between levels), shifted only by timing noise.

    Returns:
        ``{"signal", "kills": [per attempt: moment, anchor, delay, at_reference, signalled, exit_status, found],
        "checks", "passed", "wall_seconds", ...}``.
    """
    kind = args[0]
    rng = random.Random(f"{seed}-{kind}-{sig}")
    moments = sorted(rng.uniform(0.0, ref["wall_seconds"]) for _ in range(kills))
    outdir.mkdir(parents=True, exist_ok=True)
    log_path = outdir.parent / f"{outdir.name}.log"
    cmd = [*args, "--resume", "latest"]
    t_start = time.perf_counter()
    attempts, final_rc = [], None
    for i, moment in enumerate(moments):
        anchor, t_ref = resume_anchor(outdir, kind, ref)
        root = _run_root(outdir)
        since = time.time()
        proc = _start(cmd, outdir, env, log_path)
        t0 = time.perf_counter()
        reached = anchor is None or _wait_for_anchor(proc, root / anchor, since - 1e-3, timeout)
        delay = max(0.0, moment - t_ref)
        rec = {"moment": round(moment, 3), "anchor": anchor or "process start", "anchor_reference_time": t_ref,
               "delay_after_anchor": round(delay, 3)}
        try:
            if not reached:
                raise subprocess.TimeoutExpired(cmd, 0) if proc.poll() is None else _Exited()
            proc.wait(timeout=delay)
            raise _Exited()
        except _Exited:
            rec.update(signalled=False, exit_status=proc.wait(), note="exited before the kill")
        except subprocess.TimeoutExpired:
            rec["seconds_after_start"] = round(time.perf_counter() - t0, 3)
            os.killpg(proc.pid, SIGNALS[sig])
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:  # SIGINT/TERM ignored: a hang is a finding, then stop it
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
                rec["note"] = "did not stop within 120 s of the signal"
            rec.update(signalled=True, exit_status=rc, at_reference=at_reference(ref["timeline"], moment),
                       found=forensics(outdir, kind))
        attempts.append(rec)
        found = rec.get("found", {})
        log(f"  SIG{sig} {i + 1}/{kills} at {moment:.2f} s (reference: {rec.get('at_reference', '-')}): "
            + (" ".join(str(found[k]) for k in ("stage", "phase", "last_checkpoint", "temps") if k in found)
               if rec["signalled"] else f"{rec['note']} (exit {rec['exit_status']})"))
        if not rec["signalled"]:
            final_rc = rec["exit_status"]
            if final_rc == 0:
                break
    tries = 0
    while final_rc != 0 and tries < max_final_tries:
        tries += 1
        proc = _start(cmd, outdir, env, log_path)
        try:
            final_rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            final_rc = proc.wait()
    wall = time.perf_counter() - t_start
    checks = check_run(Path(ref["run"]), _run_root(outdir), kind, final_rc)
    passed = all(c["passed"] for c in checks.values())
    out = {"signal": sig, "kills_requested": kills, "kills_delivered": sum(a["signalled"] for a in attempts),
           "kills": attempts, "final_resumes": tries, "checks": checks, "passed": passed,
           "wall_seconds": round(wall, 2)}
    if not passed:
        out["log_tail"] = _tail(log_path, 3000)
    return out


class _Exited(Exception):
    """The attempt's process ended before it was signalled."""


def run_batteries(workdir: Path, *, commands=("train", "ticket"), signals=(("KILL", 20),), seed: int = 0,
                  threads: int = 1, data: str = "faces100", metrics: str | None = None,
                  log=lambda msg: None) -> dict:
    """A reference run per command, then one battery per (signal, kills) and command, in ``workdir``.

    Returns:
        The results document (also what ``--out`` writes): settings, machine, per command the reference (wall time,
        timeline) and the batteries, and ``passed``.
    """
    import torch

    import degan

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if metrics is None:
        metrics = "kid_train" if have_inception() else "none"
    env = _env(threads, workdir / "cache")
    doc: dict = {"settings": {"commands": list(commands), "signals": [list(s) for s in signals], "seed": seed,
                              "threads": threads, "data": data, "metrics": metrics},
                 "machine": {"python": platform.python_version(), "torch": torch.__version__,
                             "degan": degan.__version__, "cpus": os.cpu_count(), "platform": platform.platform()},
                 "commands": {}}
    t0 = time.perf_counter()
    if metrics != "none":  # the reference features are computed once, before the timed reference runs
        log("[kill battery] warming the reference-feature cache")
        warm = command_args("train", data, metrics, threads)
        warm[warm.index("--kimg") + 1] = "0.008"
        res = subprocess.run([sys.executable, "-m", "degan.cli", *warm, "--outdir", str(workdir / "warmup")],
                             env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"the cache warm-up run failed:\n{(res.stdout + res.stderr)[-1500:]}")
        shutil.rmtree(workdir / "warmup", ignore_errors=True)
    doc["setup_seconds"] = round(time.perf_counter() - t0, 1)
    for kind in commands:
        args = command_args(kind, data, metrics, threads)
        log(f"[kill battery] degan {kind}: reference run")
        ref = run_reference(args, workdir / f"{kind}-reference", env)
        log(f"[kill battery] degan {kind}: reference took {ref['wall_seconds']:.1f} s "
            f"(start-up {ref['startup_seconds']:.1f} s)")
        entry = {"command": "degan " + " ".join(args) + " --outdir OUT [--resume latest]", "reference": ref,
                 "batteries": {}}
        for sig, kills in signals:
            log(f"[kill battery] degan {kind}: {kills} x SIG{sig}")
            res = kill_battery(args, ref, workdir / f"{kind}-{sig}", env, kills=kills, sig=sig, seed=seed, log=log)
            failed = [k for k, c in res["checks"].items() if not c["passed"]]
            log(f"[kill battery] degan {kind} SIG{sig}: {res['kills_delivered']} kills, "
                + ("all checks passed" if not failed else "FAILED: " + ", ".join(failed))
                + f" ({res['wall_seconds']:.0f} s)")
            entry["batteries"][sig] = res
        doc["commands"][kind] = entry
    doc["wall_seconds"] = round(time.perf_counter() - t0, 1)
    doc["passed"] = all(b["passed"] for c in doc["commands"].values() for b in c["batteries"].values())
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="results JSON")
    p.add_argument("--kills", default="20",
                   help="kills per command, one number or one per signal (e.g. 20,3,3)  [default: 20]")
    p.add_argument("--signal", default="KILL", help="KILL, TERM, INT or a list (KILL,TERM,INT)  [default: KILL]")
    p.add_argument("--commands", default="train,ticket", help="train, ticket or both  [default: train,ticket]")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments  [default: 0]")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every run  [default: 1]")
    p.add_argument("--data", default="faces100", help="training data  [default: the embedded faces100]")
    p.add_argument("--metrics", default=None, help="[default: kid_train if the Inception weights are installed]")
    p.add_argument("--workdir", default=None, help="where the runs go  [default: a temporary folder]")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    a = p.parse_args(argv)
    sigs = [s.strip().upper().removeprefix("SIG") for s in a.signal.split(",") if s.strip()]
    bad = [s for s in sigs if s not in SIGNALS]
    if bad:
        p.error(f"--signal takes KILL, TERM, INT; got {bad}")
    kills = [int(k) for k in a.kills.split(",")]
    if len(kills) == 1:
        kills *= len(sigs)
    if len(kills) != len(sigs) or min(kills) < 1:
        p.error("--kills: one number >= 1, or one per signal")
    commands = [c.strip() for c in a.commands.split(",") if c.strip()]
    if not commands or any(c not in ("train", "ticket") for c in commands):
        p.error("--commands takes train, ticket or train,ticket")
    workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="degan-kill-battery-"))
    try:
        doc = run_batteries(workdir, commands=commands, signals=list(zip(sigs, kills)), seed=a.seed,
                            threads=a.threads, data=a.data, metrics=a.metrics,
                            log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    doc["workdir"] = str(workdir) if (a.keep or a.workdir) else None
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{'PASSED' if doc['passed'] else 'FAILED'}: {a.out} ({doc['wall_seconds']:.0f} s)")
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
