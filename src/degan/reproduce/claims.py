"""The claims suite: one named experiment per headline claim of the seed papers, as arms x seeds.

Every claim runs on the shared CIFAR-10 subset (5,085 training images, ~10 % of CIFAR-10; 1,017 held-out test
images) at 32 px with the CPU-sized ``dcgan`` (width 0.5, G 359,827 / D 313,313 parameters), hinge loss, Adam 2e-4
betas (0, 0.9), batch 32, 1 D step per G step, G_ema 0.99, x-flips of the reals in every arm, and
:data:`KIMG` thousand real images per run (per IMP level). The metric is KID (unbiased, 100 subsets) of 1,000 G_ema
samples against the 1,017 held-out test images, FID of the same samples beside it (``kid1k_test``,
``fid1k_test``); a run's seed sets init, latents and augmentation, and every seed of an arm trains on the same
images. Why these sizes: ``docs/reproduce.md``.

A *job* is one ``degan`` command; it writes one or more *results* (stages: a level, a branch). Jobs shared by
several claims (the dense DiffAugment run is the baseline of C1, C3, C4 and C5) exist once. Each result id names
its arm and seed: ``c1-n100-diffaug-s0``.

Claims (paper, figure or table):

- **C1** DiffAugment (Zhao et al. 2020, CIFAR-10 10 %/20 % tables and the 100-shot results): DiffAugment
  ``color,translation,cutout`` vs no augmentation (x-flip only) vs ADA at 100, 500 and all 5,085 images.
- **C2** tickets (GAN-LTH Fig. 2 / Table 1; ticket paper Table 3): IMP_GD levels 1-5 (20-67.2 % sparse) vs the
  dense GAN, vs random pruning (``random_mask``: same per-layer density, same init) and random tickets (same mask,
  fresh init) at levels 3 and 5; no augmentation, as in GAN-LTH.
- **C3** tickets + augmentation (Chen et al. 2021, Table 3): dense+DiffAugment vs ticket+DiffAugment vs
  ticket+DiffAugment+AdvAug vs dense+DiffAugment+AdvAug; the ticket is C2's level 5 (67.2 % sparse), drawn with
  the same small data, retrained from theta_0.
- **C4** RG-GAN (Saxena et al. 2024, Table 5): RG-GAN (dynamic pruning, regeneration trigger every 20 kimg on KID of
  250 samples vs the training images) vs the dense GAN at equal #RI, with training FLOPs per arm.
- **C5** precision: fp32 vs bf16 autocast at equal settings (is bf16 a safe default where the hardware has bf16
  units?).
- **C6** early-bird tickets (You et al. 2020; Kalibhat et al. 2021; SPEC §10) vs C2's IMP ticket at level 5
  (67.2 % sparse), no augmentation: the iterative early-bird (``--early-bird``, IMP_GD: every pruned level stops
  when its masks converge), the one-shot early-bird (``--method omp --early-bird``: the dense run stops when the
  mask at 67.2 % converges), the same trained on from the draw (``--rewind draw``, You et al.'s EB Train) and
  one-shot magnitude pruning of the fully trained dense run (OMP, the one-shot draw when the masks never
  converge). Each search's #RI and FLOPs are summed over every level it trains (:class:`Search`) and compared with
  IMP's six levels: the goal is at most half of IMP's compute with KID inside the IMP ticket's interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Training length of every run (each IMP level), thousands of real images shown to D.
KIMG = 80
#: Metrics of every run: the primary (KID) first.
METRICS = ("kid1k_test", "fid1k_test")
PRIMARY = METRICS[0]
NUM_GEN = 1000
DIFFAUG = "diffaug:color,translation,cutout"
ADA = "ada:bgc:kimg=10"  # p may move by 1 in 10 kimg (the paper's 500 kimg assumes runs of 5-25 Mimg)
IMP_LEVELS = 5
TICKET_LEVEL = 5
RANDOM_LEVELS = (3, 5)
SIZES = (100, 500, 5085)
FULL = 5085
#: Bumped when a change to the suite makes old per-run results incomparable.
SUITE_VERSION = 1


def common_args() -> tuple[str, ...]:
    """degan options shared by every train/ticket job (data, outdir and seed are added by the runner)."""
    return ("--model", "dcgan", "--width", "0.5", "--batch", "32", "--kimg", str(KIMG), "--mirror",
            "--metrics", ",".join(METRICS), "--num-gen", str(NUM_GEN), "--no-progress")


@dataclass(frozen=True)
class Job:
    """One degan command.

    Attributes:
        id: unique id, ends with ``-s<seed>``.
        command: ``train``, ``ticket`` or ``branch``.
        args: options after the command; ``{run:<job id>}`` stands for that job's run folder.
        stages: ``{result id: stage folder name}`` this job writes (``level_0``, ``level_3_random_mask``).
        needs: job ids that must be finished first.
        parent: for ``branch`` jobs, the job whose run folder the branch is written into.
        subdir: a folder under the suite's outdir for this job's run, where the run folder name (the config
            hash) might not tell two jobs apart. C5's bf16 run keeps its ``bf16/`` folder from the time when
            ``train.precision`` was outside the hash (it is in the hash now, unless fp32).
    """

    id: str
    command: str
    args: tuple[str, ...]
    stages: dict
    needs: tuple[str, ...] = ()
    parent: str | None = None
    seed: int = 0
    subdir: str | None = None


@dataclass(frozen=True)
class Arm:
    """An arm of a claim: one result per seed, made by ``result(seed)``."""

    name: str
    label: str
    result: str  # result id pattern with ``{s}`` for the seed


@dataclass(frozen=True)
class Test:
    """``arm`` vs ``baseline`` by paired differences of the primary metric.

    ``expect``: ``better`` (arm lower), ``match`` (arm not worse by more than the margin), ``within`` (the arm's
    mean at most the upper end of the baseline's interval; :func:`~degan.reproduce.stats.within_verdict`), or None
    (reported only).
    """

    arm: str
    baseline: str
    expect: str | None
    statement: str


@dataclass(frozen=True)
class Search:
    """The compute of a whole ticket search: the sum of #RI and training FLOPs over every result (level) the search
    trains, per seed, compared with a baseline search as a ratio.

    Attributes:
        arm: the arm whose ticket the search draws (its name in :attr:`Claim.arms`).
        results: result id patterns with ``{s}``: every level the search trains, the dense level 0 included.
        baseline: the name of the baseline search (another :class:`Search` of the claim), or None.
        at_most: the ratio to the baseline the claim asks for (e.g. 0.5: at most half of IMP's compute), or None.
    """

    arm: str
    results: tuple[str, ...]
    baseline: str | None = None
    at_most: float | None = None


@dataclass(frozen=True)
class Claim:
    name: str
    title: str
    paper: str
    arms: tuple[Arm, ...]
    tests: tuple[Test, ...]
    jobs: object = field(repr=False, default=None)  # seed -> list[Job]
    searches: tuple[Search, ...] = ()


# ----- the jobs, per seed --------------------------------------------------------------------------------------

def _aug_args(aug: str) -> tuple[str, ...]:
    return ("--augment", {"none": "none", "diffaug": DIFFAUG, "ada": ADA}[aug])


def _subset_args(n: int) -> tuple[str, ...]:
    return () if n == FULL else ("--subset", str(n))


def c1_job(n: int, aug: str, s: int) -> Job:
    rid = f"c1-n{n}-{aug}-s{s}"
    return Job(rid, "train", (*_subset_args(n), *_aug_args(aug), "--seed", str(s)), {rid: "level_0"}, seed=s)


def dense_da_job(s: int) -> Job:
    return c1_job(FULL, "diffaug", s)


def c2_imp_job(s: int) -> Job:
    dense = c1_job(FULL, "none", s)
    stages = {f"c2-imp-L{k}-s{s}": f"level_{k}" for k in range(1, IMP_LEVELS + 1)}
    return Job(f"c2-imp-s{s}", "ticket", (*_aug_args("none"), "--seed", str(s), "--levels", str(IMP_LEVELS),
                                          "--dense-from", "{run:" + dense.id + "}"),
               stages, needs=(dense.id,), seed=s)


def c2_branch_job(kind: str, k: int, s: int) -> Job:
    imp = c2_imp_job(s)
    short = {"random_mask": "rmask", "random_ticket": "rticket"}[kind]
    rid = f"c2-{short}-L{k}-s{s}"
    return Job(rid, "branch", ("{run:" + imp.id + "}" + f"/level_{k}", kind, "--no-progress"),
               {rid: f"level_{k}_{kind}"}, needs=(imp.id,), parent=imp.id, seed=s)


def c3_job(arm: str, s: int) -> Job:
    ticket = arm.startswith("ticket")
    args = [*_aug_args("diffaug"), "--seed", str(s)]
    needs: tuple[str, ...] = ()
    if ticket:
        imp = c2_imp_job(s)
        args += ["--ticket", "{run:" + imp.id + "}" + f"/level_{TICKET_LEVEL}"]
        needs = (imp.id,)
    if arm.endswith("advaug"):
        args.append("--advaug")
    rid = f"c3-{arm}-s{s}"
    return Job(rid, "train", tuple(args), {rid: "level_0"}, needs=needs, seed=s)


def c4_rg_job(s: int) -> Job:
    rid = f"c4-rg-s{s}"
    return Job(rid, "train", (*_aug_args("diffaug"), "--seed", str(s), "--dynamic-prune", "--regen-every", "20",
                              "--set", "dynamic.regen_metric=kid_train", "--set", "dynamic.regen_num_gen=250"),
               {rid: "level_0"}, seed=s)


def c5_bf16_job(s: int) -> Job:
    rid = f"c5-bf16-s{s}"
    return Job(rid, "train", (*_aug_args("diffaug"), "--seed", str(s), "--precision", "bf16"), {rid: "level_0"},
               seed=s, subdir="bf16")


#: One-shot magnitude pruning straight to level 5's density: one level of rate 1 - 0.8 ** 5.
OMP_RATE = round(1 - 0.8 ** IMP_LEVELS, 5)


def c6_eb1_job(s: int) -> Job:
    """One-shot early-bird (SPEC §10's main form): the dense run stops when the mask at the final density converges,
    then only that density trains."""
    stages = {f"c6-eb1-L0-s{s}": "level_0", f"c6-eb1-L{IMP_LEVELS}-s{s}": f"level_{IMP_LEVELS}"}
    return Job(f"c6-eb1-s{s}", "ticket", (*_aug_args("none"), "--seed", str(s), "--levels", str(IMP_LEVELS),
                                          "--method", "omp", "--early-bird"), stages, seed=s)


def c6_eb1d_job(s: int) -> Job:
    """One-shot early-bird trained on from the draw (``--rewind draw``): the ticket starts from the weights its mask
    was drawn from, not theta_0 (You et al.'s EB Train continues training the drawn ticket)."""
    stages = {f"c6-eb1d-L0-s{s}": "level_0", f"c6-eb1d-L{IMP_LEVELS}-s{s}": f"level_{IMP_LEVELS}"}
    return Job(f"c6-eb1d-s{s}", "ticket", (*_aug_args("none"), "--seed", str(s), "--levels", str(IMP_LEVELS),
                                           "--method", "omp", "--early-bird", "--rewind", "draw"), stages, seed=s)


def c6_omp_job(s: int) -> Job:
    """One-shot magnitude pruning of the fully trained dense run to 67.2 % sparsity (the one-shot draw of an
    early-bird search whose masks never converge before the end of the dense run)."""
    dense = c1_job(FULL, "none", s)
    rid = f"c6-omp-L1-s{s}"
    return Job(f"c6-omp-s{s}", "ticket", (*_aug_args("none"), "--seed", str(s), "--levels", "1", "--method", "omp",
                                          "--set", f"prune.rate={OMP_RATE}", "--dense-from", "{run:" + dense.id + "}"),
               {rid: "level_1"}, needs=(dense.id,), seed=s)


def c6_eb_job(s: int) -> Job:
    stages = {f"c6-eb-L{k}-s{s}": f"level_{k}" for k in range(0, IMP_LEVELS + 1)}
    return Job(f"c6-eb-s{s}", "ticket", (*_aug_args("none"), "--seed", str(s), "--levels", str(IMP_LEVELS),
                                         "--early-bird"), stages, seed=s)


# ----- the claims ------------------------------------------------------------------------------------------------

def _c1() -> Claim:
    arms, tests = [], []
    for n in SIZES:
        for aug, label in (("none", "no augmentation (x-flip)"), ("diffaug", "DiffAugment c,t,c"), ("ada", "ADA bgc")):
            arms.append(Arm(f"n{n}-{aug}", f"{n} img, {label}", f"c1-n{n}-{aug}-s{{s}}"))
        tests.append(Test(f"n{n}-diffaug", f"n{n}-none", "better",
                          f"{n} images: DiffAugment beats no augmentation"))
        tests.append(Test(f"n{n}-ada", f"n{n}-none", "better", f"{n} images: ADA beats no augmentation"))
        tests.append(Test(f"n{n}-diffaug", f"n{n}-ada", None, f"{n} images: DiffAugment vs ADA"))

    def jobs(s):
        return [c1_job(n, aug, s) for n in SIZES for aug in ("none", "diffaug", "ada")]
    return Claim("C1", "DiffAugment at 100, 500 and 5,085 images",
                 "DiffAugment (Zhao et al., NeurIPS 2020), CIFAR-10 10 %/20 % tables, 100-shot results",
                 tuple(arms), tuple(tests), jobs)


def _c2() -> Claim:
    arms = [Arm("dense", "dense (level 0)", f"c1-n{FULL}-none-s{{s}}")]
    arms += [Arm(f"imp-L{k}", f"IMP_GD level {k} ({1 - 0.8 ** k:.1%} sparse)", f"c2-imp-L{k}-s{{s}}")
             for k in range(1, IMP_LEVELS + 1)]
    tests = [Test(f"imp-L{k}", "dense", "match", f"the level-{k} ticket ({1 - 0.8 ** k:.1%} sparse) matches dense")
             for k in range(1, IMP_LEVELS + 1)]
    for k in RANDOM_LEVELS:
        arms.append(Arm(f"rmask-L{k}", f"random pruning, level-{k} densities", f"c2-rmask-L{k}-s{{s}}"))
        arms.append(Arm(f"rticket-L{k}", f"random ticket (level-{k} mask, fresh init)", f"c2-rticket-L{k}-s{{s}}"))
        tests.append(Test(f"imp-L{k}", f"rmask-L{k}", "better", f"level {k}: the ticket beats random pruning"))
        tests.append(Test(f"imp-L{k}", f"rticket-L{k}", "better", f"level {k}: the ticket beats the random ticket"))

    def jobs(s):
        return [c1_job(FULL, "none", s), c2_imp_job(s)] + [c2_branch_job(kind, k, s) for k in RANDOM_LEVELS
                                                           for kind in ("random_mask", "random_ticket")]
    return Claim("C2", "IMP tickets vs dense, random pruning and random tickets (no augmentation, 5,085 images)",
                 "GAN-LTH (Chen et al., ICLR 2021) Fig. 2 / Table 1; ticket paper Table 3",
                 tuple(arms), tuple(tests), jobs)


def _c3() -> Claim:
    sp = f"{1 - 0.8 ** TICKET_LEVEL:.1%}"
    arms = (Arm("dense-da", "dense + DiffAugment", f"c1-n{FULL}-diffaug-s{{s}}"),
            Arm("ticket-da", f"ticket ({sp} sparse) + DiffAugment", "c3-ticket-da-s{s}"),
            Arm("ticket-da-advaug", "ticket + DiffAugment + AdvAug", "c3-ticket-da-advaug-s{s}"),
            Arm("dense-da-advaug", "dense + DiffAugment + AdvAug", "c3-dense-da-advaug-s{s}"))
    tests = (Test("ticket-da", "dense-da", "better", "ticket + DiffAugment beats dense + DiffAugment"),
             Test("ticket-da-advaug", "dense-da", "better", "ticket + DiffAugment + AdvAug beats dense + DiffAugment"),
             Test("ticket-da-advaug", "ticket-da", "better", "AdvAug improves the ticket"),
             Test("dense-da-advaug", "dense-da", "better", "AdvAug improves the dense GAN"))

    def jobs(s):
        return [dense_da_job(s), c1_job(FULL, "none", s), c2_imp_job(s),
                c3_job("ticket-da", s), c3_job("ticket-da-advaug", s), c3_job("dense-da-advaug", s)]
    return Claim("C3", "Tickets + DiffAugment + AdvAug at 10 % data (5,085 images)",
                 "Data-efficient GAN tickets (Chen et al., NeurIPS 2021) Table 3", arms, tests, jobs)


def _c4() -> Claim:
    arms = (Arm("dense-da", "dense + DiffAugment", f"c1-n{FULL}-diffaug-s{{s}}"),
            Arm("rg-da", "RG-GAN + DiffAugment", "c4-rg-s{s}"))
    tests = (Test("rg-da", "dense-da", "better", "RG-GAN beats the dense GAN at equal #RI"),)
    return Claim("C4", "RG-GAN vs dense at equal #RI (5,085 images, DiffAugment)",
                 "RG-GAN (Saxena et al., AAAI 2024) Table 5", arms, tests,
                 lambda s: [dense_da_job(s), c4_rg_job(s)])


def _c5() -> Claim:
    arms = (Arm("fp32", "fp32", f"c1-n{FULL}-diffaug-s{{s}}"), Arm("bf16", "bf16 autocast", "c5-bf16-s{s}"))
    tests = (Test("bf16", "fp32", "match", "bf16 training is as good as fp32"),)
    return Claim("C5", "bf16 vs fp32 training (5,085 images, DiffAugment)",
                 "this project (benchmarks/train_speed.py: bf16 1.45-3.2x faster on this CPU)", arms, tests,
                 lambda s: [dense_da_job(s), c5_bf16_job(s)])


def _c6() -> Claim:
    sp = f"{1 - 0.8 ** IMP_LEVELS:.1%}"
    L = IMP_LEVELS
    arms = (Arm(f"imp-L{L}", f"IMP_GD level {L} ({sp} sparse)", f"c2-imp-L{L}-s{{s}}"),
            Arm(f"eb-L{L}", f"iterative early-bird IMP_GD level {L} ({sp} sparse)", f"c6-eb-L{L}-s{{s}}"),
            Arm(f"eb1-L{L}", f"one-shot early-bird ({sp} sparse)", f"c6-eb1-L{L}-s{{s}}"),
            Arm(f"eb1d-L{L}", f"one-shot early-bird trained on from the draw ({sp} sparse)", f"c6-eb1d-L{L}-s{{s}}"),
            Arm(f"omp-L{L}", f"one-shot magnitude from the trained dense GAN ({sp} sparse)", "c6-omp-L1-s{s}"))
    tests = []
    for arm, what in ((f"eb-L{L}", "the iterative early-bird ticket"), (f"eb1-L{L}", "the one-shot early-bird ticket"),
                      (f"eb1d-L{L}", "the one-shot early-bird ticket trained on from the draw"),
                      (f"omp-L{L}", "the one-shot (OMP) ticket")):
        tests.append(Test(arm, f"imp-L{L}", "match", f"{what} ({sp} sparse) matches the IMP ticket"))
        tests.append(Test(arm, f"imp-L{L}", "within", f"{what}: KID inside the IMP ticket's interval"))
    imp_search = (f"c1-n{FULL}-none-s{{s}}", *[f"c2-imp-L{k}-s{{s}}" for k in range(1, L + 1)])
    searches = (Search(f"imp-L{L}", imp_search),
                Search(f"eb-L{L}", tuple(f"c6-eb-L{k}-s{{s}}" for k in range(0, L + 1)), f"imp-L{L}", 0.5),
                Search(f"eb1-L{L}", (f"c6-eb1-L0-s{{s}}", f"c6-eb1-L{L}-s{{s}}"), f"imp-L{L}", 0.5),
                Search(f"eb1d-L{L}", (f"c6-eb1d-L0-s{{s}}", f"c6-eb1d-L{L}-s{{s}}"), f"imp-L{L}", 0.5),
                Search(f"omp-L{L}", (f"c1-n{FULL}-none-s{{s}}", "c6-omp-L1-s{s}"), f"imp-L{L}", 0.5))

    def jobs(s):
        return [c1_job(FULL, "none", s), c2_imp_job(s), c6_eb_job(s), c6_eb1_job(s), c6_eb1d_job(s),
                c6_omp_job(s)]
    return Claim("C6", f"Early-bird and one-shot tickets vs IMP tickets at {sp} sparsity, and their search compute "
                 "(no augmentation, 5,085 images)",
                 "Early-bird tickets (You et al., ICLR 2020); for GANs Kalibhat et al., AAAI 2021", arms, tuple(tests),
                 jobs, tuple(searches))


CLAIMS: dict[str, Claim] = {c.name: c for c in (_c1(), _c2(), _c3(), _c4(), _c5(), _c6())}
#: The order of ``all``: the cheap claims first, so that they reach 3 seeds before the long IMP chains run.
RUN_ORDER = ("C1", "C5", "C4", "C2", "C3", "C6")


def get_claims(names) -> list[Claim]:
    """Claims by name (``C1``..``C6``, case-insensitive; ``all``).

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    out: list[Claim] = []
    for name in names:
        key = name.upper()
        if key == "ALL":
            out += [CLAIMS[n] for n in RUN_ORDER if CLAIMS[n] not in out]
            continue
        if key not in CLAIMS:
            raise ValueError(f"unknown claim {name!r}; valid claims are: {', '.join(CLAIMS)}, all")
        if CLAIMS[key] not in out:
            out.append(CLAIMS[key])
    return out


def jobs_for(claims: list[Claim], seeds: list[int]) -> dict[str, Job]:
    """All jobs of the claims for the seeds, each once, in a dependency-respecting order."""
    out: dict[str, Job] = {}
    for c in claims:
        for s in seeds:
            for job in c.jobs(s):
                out.setdefault(job.id, job)
    return out
