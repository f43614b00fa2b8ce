"""Which UNet training recipe gives the best digits per CPU-minute (`make recipes`).

Every recipe is the preset's UNet recipe (the baseline) with one change, trained on the same
latent cache for the same wall-clock budget (a recipe that changes the VAE first trains its own,
as the preset trains make all's, and encodes its own cache; the VAE's time is reported beside):
the run stops when its training time reaches the budget, and its learning rate decays over the
steps the clock extrapolates to (run_training's `time_budget`), so that each recipe gets the run
its speed buys. Two short calibration runs first measure its seconds per step and start-up cost,
for the first estimate of that length (the speed of a shared 2-core machine drifts by ±15% over
minutes, so the estimate alone would not keep the budget). Checks during training (held-out loss
and the FID of 1,000 images about every quarter of the run) are not charged to the budget: the
charged time is the log's `train_seconds` (monitor.py).

Each trained recipe is scored with the default sampler on `num_images` images in the three
rows of `make all` (random digits; the "no label" branch; digits 0-9 at the recipe's guidance,
with how often the classifier recognises the prompted digit), once per noise seed, beside its
VAE's reconstructions of as many real images (the row that bounds the others from below). Every
recipe is sampled from the same noise at a given seed (same latent shape, same labels), so the
differences to the baseline are paired; their spread over the seeds is the sampling noise of a
difference. A recipe's checkpoint (work_dir/<name>.safetensors), its plan (the steps its
calibration gave) and its scores per seed are reused while its settings are unchanged, so the
study grows one recipe or one seed at a time; a killed run resumes from its snapshot.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import Checkpoint, load_checkpoint, load_model
from .classifier import Classifier
from .distributed import describe_device
from .errors import ConfigError, LdmError, check_choice
from .latents import LatentCache, load_latent_cache, save_latent_cache
from .monitor import Monitor, read_log
from .outputs import Outputs, write_study, write_text_atomic
from .pipeline import LatentDiffusion
from .plots import new_figure, save_figure
from .presets import Preset
from .prompt import Prompt
from .runtime import PRECISIONS, RunContext, native_bf16_cpu, precision_policy
from .sampling import SamplerConfig
from .scoring import Scorer, TestSetFID, vae_reconstructions, validation_images
from .snapshot import snapshot_path
from .stages import SampleQuality, train_unet, train_vae
from .vae import VAE
from .version import __version__

CALIBRATION_STEPS = (10, 40)  # two short runs: their difference is the time of the steps alone
QUALITY_IMAGES = 1000  # images per FID during training (the curves of the plot)
ROWS = ("VAE reconstruction", "random digits", "no label", "digits 0-9")


@dataclass(frozen=True)
class Recipe:
    """The baseline with the named fields changed; `change` says what, in words."""
    name: str
    change: str
    diffusion: dict = field(default_factory=dict)  # DiffusionConfig fields
    unet_model: dict = field(default_factory=dict)  # UNetConfig fields
    training: dict = field(default_factory=dict)  # TrainSettings fields (the budget sets the steps)
    vae_model: dict = field(default_factory=dict)  # VAEConfig fields: a recipe with any trains its own VAE
    latent_target: str = "sample"  # latents.LATENT_TARGETS
    precision: str = "auto"  # runtime.PRECISIONS, of the denoiser's forward passes in training and sampling
    guidance: float | None = None  # of the digits 0-9 row; None: the prompt's default (prompt.py)

    def __post_init__(self):
        check_choice("precision", self.precision, PRECISIONS)

    def prompts(self) -> dict[str, Prompt]:
        return {"random digits": Prompt("any"), "no label": Prompt("none"),
                "digits 0-9": Prompt("all", self.guidance)}


RECIPES = {r.name: r for r in (
    Recipe("baseline", "the preset's recipe"),
    Recipe("fp32", "full precision where the baseline computes in bf16 (a CPU with native bf16)", precision="fp32"),
    Recipe("uniform-t", "timesteps drawn uniformly", diffusion={"timesteps": "uniform"}),
    Recipe("log-normal-t", "timesteps drawn from EDM's log-normal density of σ (Karras et al. 2022)",
           diffusion={"timesteps": "log-normal"}),
    Recipe("posterior-mean", "the UNet learns the posterior means μ instead of samples μ + σ·ε",
           latent_target="mean"),
    Recipe("kl-0.01", "a VAE with KL weight β = 0.01 instead of 0.1: latents with less posterior noise (latent "
           "diffusion's autoencoders weigh their KL slightly, Rombach et al. 2022)", vae_model={"beta": 0.01}),
    Recipe("kl-0.001", "a VAE with KL weight β = 0.001 instead of 0.1", vae_model={"beta": 0.001}),
    Recipe("width-64", "a UNet of base width 64 instead of 48", unet_model={"base_channels": 64}),
    Recipe("width-32", "a UNet of base width 32 instead of 48", unet_model={"base_channels": 32}),
    Recipe("min-snr-5", "min-SNR-γ loss weighting, γ = 5 (Hang et al. 2023)", diffusion={"min_snr_gamma": 5.0}),
    Recipe("drop-20", "20% of labels dropped instead of 50%", diffusion={"label_dropout": 0.2}),
    Recipe("drop-10", "10% of labels dropped instead of 50%", diffusion={"label_dropout": 0.1}),
)}


def recipe_problem(recipe: Recipe, device: torch.device) -> str | None:
    """Why this machine cannot run `recipe` fairly, or None."""
    if device.type == "cpu" and recipe.precision != "auto" and not native_bf16_cpu():
        # auto is fp32 here: an fp32 recipe would be the baseline again, a bf16 one emulated
        return "this CPU has no native bf16 (AVX512-BF16 or AMX)"
    return None


@dataclass
class StudyInputs:
    """What every recipe is trained and scored with."""
    preset: Preset
    cache: LatentCache
    vae: VAE
    vae_ckpt: Checkpoint
    classifier: Classifier
    train_images: torch.Tensor
    test_images: torch.Tensor
    vae_path: Path


class RecipeRun:
    """One recipe in the study's work folder: its configs, plan, training and scores."""

    def __init__(self, recipe: Recipe, inputs: StudyInputs, run: RunContext, budget_seconds: float, work_dir: Path):
        preset = inputs.preset
        self.recipe, self.inputs, self.run, self.budget = recipe, inputs, run, budget_seconds
        self.unet_model = dataclasses.replace(preset.unet_model, **recipe.unet_model)
        self.diffusion = dataclasses.replace(preset.diffusion, **recipe.diffusion)
        self.training = dataclasses.replace(preset.unet, **recipe.training)
        self.checkpoint = work_dir / f"{recipe.name}.safetensors"
        self.plan_path = work_dir / f"{recipe.name}.plan.json"
        self.scores_path = work_dir / f"{recipe.name}.scores.json"
        self.log_path = work_dir / f"{recipe.name}.log.jsonl"
        # a recipe that changes the VAE trains its own, as the preset trains make all's, and encodes
        # its own latent cache; the study's data is that of make all's latents
        self.own_vae = bool(recipe.vae_model)
        self.vae_model = dataclasses.replace(preset.vae_model, **recipe.vae_model)
        self.vae_path = work_dir / f"{recipe.name}.vae.safetensors" if self.own_vae else inputs.vae_path
        self.latents_path = work_dir / f"{recipe.name}.latents.safetensors"
        self.vae_settings = json.loads(json.dumps({
            "vae_model": dataclasses.asdict(self.vae_model), "training": dataclasses.asdict(preset.vae),
            "seed": run.seed, "data": inputs.cache.info.get("fingerprint")})) if self.own_vae else None
        # what makes two runs of this recipe the same: a change to any of it retrains
        self.settings = json.loads(json.dumps({
            "recipe": dataclasses.asdict(recipe), "budget_seconds": budget_seconds, "seed": run.seed,
            "preset": preset.name, "unet_model": dataclasses.asdict(self.unet_model),
            "diffusion": dataclasses.asdict(self.diffusion), "training": dataclasses.asdict(self.training),
            "latents": inputs.cache.info.get("fingerprint"), "vae": self.vae_settings}))
        self._latent_space = None

    def latent_space(self) -> tuple[LatentCache, VAE, Checkpoint]:
        """(latent cache giving the recipe's target, VAE, its checkpoint): make all's, or the recipe's own."""
        if self._latent_space is None:
            inputs = self.inputs
            cache, vae, vae_ckpt = self._own_latent_space() if self.own_vae else (inputs.cache, inputs.vae,
                                                                                   inputs.vae_ckpt)
            self._latent_space = cache.with_target(self.recipe.latent_target), vae, vae_ckpt
        return self._latent_space

    def _own_latent_space(self) -> tuple[LatentCache, VAE, Checkpoint]:
        """The recipe's VAE (reused while its settings are unchanged, else trained with the time it
        took recorded) and the latent cache it encodes (reused while made by that VAE)."""
        inputs, device = self.inputs, self.run.device
        stored = load_checkpoint(self.vae_path, "vae") if self.vae_path.is_file() else None
        if stored is None or stored.info.get("study") != self.vae_settings:
            log = self.vae_path.with_suffix(".log.jsonl")
            trained = train_vae(inputs.train_images, inputs.test_images, self.vae_model, inputs.preset.vae, self.run,
                                snapshot_to=snapshot_path(self.vae_path), monitor=Monitor(log))
            trained.info.update(study=self.vae_settings, charged_seconds=max(e["train_seconds"] for e in read_log(log)))
            trained.save(self.vae_path)
        vae, vae_ckpt = load_model(self.vae_path, VAE, device)
        if self.latents_path.is_file():
            cache = load_latent_cache(self.latents_path, device)
            if cache.vae_fingerprint == vae_ckpt.fingerprint:
                return cache, vae, vae_ckpt
        labelled = ((inputs.train_images, inputs.cache.train_labels), (inputs.test_images, inputs.cache.test_labels))
        cache = LatentCache.encode(vae, vae_ckpt.fingerprint, *labelled, device, {"vae_path": str(self.vae_path)})
        save_latent_cache(self.latents_path, cache)
        return load_latent_cache(self.latents_path, device), vae, vae_ckpt

    def vae_seconds(self) -> float | None:
        """Training seconds of the recipe's own VAE, as its checkpoint records them (None: make all's)."""
        return load_checkpoint(self.vae_path, "vae").info["charged_seconds"] if self.own_vae else None

    def precision(self):
        return precision_policy(self.recipe.precision)

    def _train(self, steps: int, run: RunContext, **kwargs):
        settings = dataclasses.replace(self.training, steps=steps, validate_every=max(1, steps // 4))
        with self.precision():
            return train_unet(self.latent_space()[0], self.unet_model, self.diffusion, settings, run,
                              desc=self.recipe.name, **kwargs)

    def plan(self) -> dict:
        """The steps the budget should buy, from two calibration runs: the run's first estimate of
        its length (kept, so that a resumed run starts from the same)."""
        if self.plan_path.is_file():
            plan = json.loads(self.plan_path.read_text())
            if plan.get("settings") == self.settings:
                return plan
        quiet = dataclasses.replace(self.run, progress=False)
        short, long = CALIBRATION_STEPS
        seconds = {steps: self._train(steps, quiet).info["train_seconds"] for steps in CALIBRATION_STEPS}
        per_step = (seconds[long] - seconds[short]) / (long - short)
        start_up = max(0.0, seconds[short] - short * per_step)
        steps = max(1, int((self.budget - start_up) / per_step))
        plan = {"settings": self.settings, "steps": steps, "seconds_per_step": per_step, "start_up_seconds": start_up}
        write_text_atomic(self.plan_path, json.dumps(plan, indent=2) + "\n")
        return plan

    def trained(self, fid: TestSetFID) -> Checkpoint:
        """The recipe's checkpoint: reused when it records these settings, else trained for the budget."""
        if self.checkpoint.is_file():
            ckpt = load_checkpoint(self.checkpoint, "unet")
            if ckpt.info.get("study") == self.settings:
                return ckpt
        plan = self.plan()
        steps = plan["steps"]
        print(f"{self.recipe.name}: about {steps} steps ({plan['seconds_per_step'] * 1000:.0f} ms each, "
              f"{self.training.batch_size / plan['seconds_per_step']:.0f} latents/s) in the "
              f"{self.budget / 60:.1f}-minute budget", flush=True)
        _, vae, vae_ckpt = self.latent_space()
        quality = SampleQuality(vae, vae_ckpt, fid, max(1, steps // 4), QUALITY_IMAGES, self.run.seed)
        trained = self._train(steps, self.run, snapshot_to=snapshot_path(self.checkpoint),
                              monitor=Monitor(self.log_path), quality=quality, time_budget=self.budget)
        charged = max(e["train_seconds"] for e in read_log(self.log_path) if e["kind"] == "train")
        steps = trained.info["training"]["steps"]
        trained.info.update(study=self.settings, plan=plan, charged_seconds=charged,
                            latents_per_second=steps * self.training.batch_size / charged)
        trained.save(self.checkpoint)
        return load_checkpoint(self.checkpoint, "unet")

    def scores(self, ckpt: Checkpoint, scorer: Scorer, num_images: int, seeds: list[int]) -> dict:
        """{seed: {row: scores}} of the trained checkpoint `ckpt`; seeds already scored are read back."""
        key = {"checkpoint": ckpt.fingerprint, "num_images": num_images, "sampler": SamplerConfig.defaults_label()}
        stored = json.loads(self.scores_path.read_text()) if self.scores_path.is_file() else {}
        by_seed = stored.get("seeds", {}) if stored.get("key") == key else {}
        missing = [seed for seed in seeds if str(seed) not in by_seed]
        if missing:
            pipe = LatentDiffusion.load(self.checkpoint, self.vae_path, self.run.device)
            with self.precision():
                for seed in missing:
                    by_seed[str(seed)] = score_rows(pipe, self.recipe, scorer, self.inputs.train_images, num_images,
                                                    seed, self.run.progress)
                    write_text_atomic(self.scores_path, json.dumps({"key": key, "seeds": by_seed}, indent=2) + "\n")
        return {seed: by_seed[str(seed)] for seed in seeds}


def score_rows(pipe: LatentDiffusion, recipe: Recipe, scorer: Scorer, train_images: torch.Tensor, num_images: int,
               seed: int, progress: bool) -> dict:
    """The VAE-reconstruction row (real training images through the VAE, which bounds every
    sample from below) and each sampled row, with the default sampler of its branch."""
    generator = torch.Generator().manual_seed(seed)
    real = validation_images(train_images, num_images, generator)
    rows = {"VAE reconstruction": kept_scores(scorer(vae_reconstructions(pipe.vae, real, generator,
                                                                                   pipe.device)))}
    for row, prompt in recipe.prompts().items():
        images = pipe.sample(num_images, SamplerConfig.for_branch(prompt.unconditional), prompt, seed=seed,
                             progress=progress)
        labels = prompt.labels(num_images, seed, pipe.label_frequencies) if prompt.digit == "all" else None
        rows[row] = kept_scores(scorer(images, labels=labels))
    return rows


def kept_scores(scores: dict) -> dict:
    """What the study keeps of a Scorer's row."""
    return {k: scores[k] for k in ("fid", "precision", "recall", "recognised") if k in scores}


def run_recipe_study(inputs: StudyInputs, run: RunContext, *, recipes: list[str], budget_seconds: float,
                     work_dir: str | os.PathLike, num_images: int, seeds: list[int]) -> dict:
    """Train (or reuse) and score every recipe; return the report. The baseline always runs first."""
    unknown = [name for name in recipes if name not in RECIPES]
    if unknown:
        raise ConfigError("recipes", unknown[0], f"expected some of {', '.join(RECIPES)}")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    names = ["baseline"] + [name for name in dict.fromkeys(recipes) if name != "baseline"]
    scorer = Scorer.compute(inputs.classifier, inputs.train_images, inputs.test_images, run.device)
    fid = TestSetFID(inputs.classifier, inputs.test_images, run.device)
    floor = fid(validation_images(inputs.train_images, num_images, torch.Generator().manual_seed(run.seed)))
    report_rows, skipped = [], {}
    for name in names:
        recipe = RECIPES[name]
        problem = recipe_problem(recipe, run.device)
        if problem:
            skipped[name] = problem
            print(f"{name}: skipped, {problem}", flush=True)
            continue
        recipe_run = RecipeRun(recipe, inputs, run, budget_seconds, work_dir)
        ckpt = recipe_run.trained(fid)
        info = ckpt.info
        scores = recipe_run.scores(ckpt, scorer, num_images, seeds)
        log = read_log(recipe_run.log_path) if recipe_run.log_path.is_file() else []
        report_rows.append({
            "recipe": name, "change": recipe.change, "steps": info["training"]["steps"],
            "train_seconds": info["charged_seconds"], "vae_seconds": recipe_run.vae_seconds(),
            "latents_per_second": info["latents_per_second"],
            "plan": {k: v for k, v in info["plan"].items() if k != "settings"}, "guidance": recipe.guidance,
            "scores": {str(seed): scores[seed] for seed in seeds},
            "fid_curve": [[e["train_seconds"], e["fid"]] for e in log if e["kind"] == "fid"]})
        summary = ", ".join(f"{row} {mean_over_seeds(report_rows[-1], row):.3f}" for row in ROWS)
        print(f"{name}: {info['training']['steps']} steps, {summary}", flush=True)
    return {"rows": report_rows, "skipped": skipped, "floor": floor, "budget_seconds": budget_seconds,
            "num_images": num_images, "seeds": seeds, "sampler": SamplerConfig.defaults_label(), "preset": inputs.preset.name,
            "device": describe_device(run.device), "torch_version": torch.__version__, "ldm_version": __version__}


def mean_over_seeds(row: dict, name: str, key: str = "fid") -> float:
    values = [scores[name][key] for scores in row["scores"].values()]
    return sum(values) / len(values)


def paired_differences(row: dict, baseline: dict, name: str) -> list[float]:
    """FID(recipe) - FID(baseline) at each noise seed."""
    return [row["scores"][seed][name]["fid"] - baseline["scores"][seed][name]["fid"] for seed in row["scores"]]


def recipes_markdown(report: dict) -> str:
    floor, rows = report["floor"], report["rows"]
    baseline = rows[0]
    seeds = ", ".join(map(str, report["seeds"]))
    lines = ["# Training recipes at equal wall-clock", "",
             f"{report['device']}; each recipe is the `{report['preset']}` preset's UNet recipe with one change, "
             f"trained for {report['budget_seconds'] / 60:.1f} minutes of wall-clock (checks excluded) on the same "
             "latents (a recipe that changes the VAE on those of its own VAE, trained as the preset trains make "
             f"all's, in the minutes of the VAE column), then sampled with {report['sampler']}, "
             f"{report['num_images']} images per row and noise seed "
             f"(seeds {seeds}; every recipe from the same noise). FID in this project's classifier features "
             f"against the MNIST test set, the mean over the seeds; Δ is the paired difference to the baseline, "
             f"its mean and, in brackets, its value at each seed. VAE reconstruction: as many real training "
             f"images through the recipe's VAE. Validation floor: {floor:.3f}.", "",
             "| recipe | change | VAE minutes | steps | minutes | latents/s | "
             + " | ".join(f"{r} | Δ" for r in ROWS) + " | recognised |",
             "|---|---|---:|---:|---:|---:|" + "---:|---:|" * len(ROWS) + "---:|"]
    for r in rows:
        cells = []
        for name in ROWS:
            cells.append(f"{mean_over_seeds(r, name):.3f} ({mean_over_seeds(r, name) / floor:.2f}×)")
            if r is baseline:
                cells.append("—")
            else:
                diffs = paired_differences(r, baseline, name)
                cells.append(f"{sum(diffs) / len(diffs):+.2f} ({'/'.join(f'{d:+.2f}' for d in diffs)})")
        recognised = mean_over_seeds(r, "digits 0-9", "recognised")
        vae = "make all's" if r["vae_seconds"] is None else f"{r['vae_seconds'] / 60:.1f}"
        lines.append(f"| {r['recipe']} | {r['change']} | {vae} | {r['steps']} | {r['train_seconds'] / 60:.1f} | "
                     f"{r['latents_per_second']:.0f} | "
                     + " | ".join(cells) + f" | {recognised:.1%} |")
    spread = [abs(d) for name in ROWS for d in
              [baseline["scores"][s][name]["fid"] - mean_over_seeds(baseline, name) for s in baseline["scores"]]]
    lines += ["", f"The baseline's FID moves by up to {max(spread):.2f} from its mean across the noise seeds "
              "(the sampling noise of one row); a paired Δ cancels most of it."]
    for name, why in report["skipped"].items():
        lines.append(f"\n`{name}` was not run: {why}.")
    return "\n".join(lines) + "\n"


def plot_recipes(report: dict, path: str | os.PathLike, outputs: Outputs | None = None) -> None:
    fig, ax = new_figure()
    for r in report["rows"]:
        if r["fid_curve"]:
            minutes, fids = zip(*((s / 60, f) for s, f in r["fid_curve"]))
            ax.plot(minutes, fids, marker="o", label=r["recipe"])
    ax.set(xlabel="training wall-clock (minutes, checks excluded)", ylabel=f"FID of {QUALITY_IMAGES} random digits",
           title="FID during training, by recipe")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    save_figure(fig, path, outputs)


def write_report(report: dict, out_dir: str | os.PathLike) -> str:
    """recipes.{json,md,png} into `out_dir`; returns the table."""
    if not report["rows"]:
        raise LdmError("no recipe could run on this machine")
    table = recipes_markdown(report)
    write_study(out_dir, "recipes", report, table, lambda path, outputs: plot_recipes(report, path, outputs),
                "FID against training wall-clock, by recipe")
    return table
