"""The recipe study (`make recipes`) and the candidates it measures: posterior-mean latents, bf16
autocast on the CPU, the wall-clock plan and the study's reuse of finished recipes."""

import json

import pytest
import torch
from test_pipeline import fid_of_test_set

from ldm import recipe_study, runtime
from ldm.checkpoint import load_checkpoint
from ldm.data import load_mnist
from ldm.diffusion import mixed_precision
from ldm.errors import ConfigError
from ldm.latents import LatentCache, estimate_scale_factor
from ldm.pipeline import LatentDiffusion
from ldm.presets import PRESETS
from ldm.prompt import Prompt
from ldm.recipe_study import RECIPES, Recipe, RecipeRun, StudyInputs, paired_differences, recipe_problem
from ldm.runtime import RunContext
from ldm.sampling import SamplerConfig
from ldm.scoring import vae_reconstructions, validation_images
from stage_scripts import SMOKE, assert_one_line_error, run_inline, run_script

RUN = RunContext(seed=0, device=torch.device("cpu"), progress=False)


def toy_cache(n: int = 4000) -> LatentCache:
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(n, 2, 7, 7, generator=g) * torch.tensor([0.5, 0.03]).view(1, 2, 1, 1) + 0.2
    logvar = torch.full_like(mean, -1.0)
    labels = torch.randint(0, 10, (n,), generator=g)
    return LatentCache(mean, logvar, mean[:100], logvar[:100], labels, labels[:100],
                       estimate_scale_factor(mean, logvar), "vae", {})


def test_a_mean_target_gives_scaled_posterior_means_of_unit_variance():
    cache = toy_cache()  # the scale factor of samples, as the cache stores it
    assert cache.with_target("sample") is cache
    means = cache.with_target("mean")
    index = torch.arange(10)
    torch.testing.assert_close(means.sample(index), means.scale_factor * cache.train_mean[index])
    assert torch.equal(means.sample(index), means.sample(index))  # no noise drawn
    assert abs(means.sample(torch.arange(len(cache.train_mean))).double().std().item() - 1) < 1e-3
    held_out, _ = means.held_out(20)
    torch.testing.assert_close(held_out, means.scale_factor * cache.test_mean[:20])
    # a sample target: μ + σ·ε, whose variance adds σ² = e^-1 to the means' spread
    spread = cache.train_mean.double().var().item()
    assert cache.scale_factor == pytest.approx((spread + torch.e ** -1) ** -0.5, rel=1e-3)
    assert means.scale_factor == pytest.approx(spread ** -0.5, rel=1e-3)
    with pytest.raises(ConfigError, match="latent target"):
        cache.with_target("mode")


def test_a_precision_policy_holds_inside_its_block_only():
    model = lambda x, t, labels: torch.nn.functional.linear(x, torch.eye(x.shape[-1]))
    x, t = torch.randn(3, 4), torch.zeros(3, dtype=torch.long)
    with runtime.precision_policy("bf16"):
        assert mixed_precision(model)(x, t, None).dtype == torch.bfloat16
        assert runtime.precision_name(torch.device("cpu")) == "bf16"
    assert mixed_precision(model)(x, t, None).dtype == torch.float32  # conftest: the suite runs fp32
    assert runtime.precision_name(torch.device("cpu")) == "fp32"


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    for native in (True, False):
        monkeypatch.setattr(runtime, "native_bf16_cpu", lambda: native)
        dtypes = runtime.autocast_dtypes("auto")
        assert dtypes.get("cpu") == (torch.bfloat16 if native else None)
        assert dtypes["cuda"] == torch.bfloat16
        assert runtime.autocast_dtypes("bf16") == {"cpu": torch.bfloat16, "cuda": torch.bfloat16}
        assert runtime.autocast_dtypes("fp32") == {}
    with pytest.raises(ConfigError, match="precision"):
        runtime.autocast_dtypes("fp16")


def test_an_explicit_precision_is_not_run_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(recipe_study, "native_bf16_cpu", lambda: False)
    assert "native bf16" in recipe_problem(Recipe("x", "y", precision="bf16"), torch.device("cpu"))
    assert "native bf16" in recipe_problem(Recipe("x", "y", precision="fp32"), torch.device("cpu"))
    assert recipe_problem(RECIPES["baseline"], torch.device("cpu")) is None
    with pytest.raises(ConfigError, match="precision"):
        Recipe("x", "y", precision="fp8")


def test_the_plan_takes_the_steps_the_budget_buys_after_the_start_up(monkeypatch, tmp_path):
    """Calibration runs that take 1 s to start and 0.1 s a step: a 21 s budget buys 200 steps."""
    calls = []

    def fake_train_unet(cache, config, diffusion, settings, run, **kwargs):
        calls.append(settings.steps)
        return type("Trained", (), {"info": {"train_seconds": 1.0 + 0.1 * settings.steps}})()

    monkeypatch.setattr(recipe_study, "train_unet", fake_train_unet)
    preset = PRESETS["smoke"]
    inputs = StudyInputs(preset, toy_cache(100), None, None, None, None, None, tmp_path / "vae.safetensors")
    plan = RecipeRun(RECIPES["baseline"], inputs, RUN, 21.0, tmp_path).plan()
    assert calls == list(recipe_study.CALIBRATION_STEPS)
    assert plan["steps"] == 200 and plan["seconds_per_step"] == pytest.approx(0.1)
    assert plan["start_up_seconds"] == pytest.approx(1.0)
    # kept: asked again, it does not calibrate again; another budget does
    assert RecipeRun(RECIPES["baseline"], inputs, RUN, 21.0, tmp_path).plan() == plan and len(calls) == 2
    assert RecipeRun(RECIPES["baseline"], inputs, RUN, 41.0, tmp_path).plan()["steps"] == 400


def test_paired_differences_are_per_seed():
    row = lambda fids: {"scores": {s: {"no label": {"fid": f}} for s, f in fids.items()}}
    assert paired_differences(row({"0": 10.0, "1": 12.0}), row({"0": 11.0, "1": 11.5}), "no label") == [-1.0, 0.5]


@pytest.mark.parametrize("flags, named", [(["--recipes", "nope"], "--recipes"),
                                          (["--budget-minutes", "inf"], "budget-minutes")])
def test_a_bad_study_option_is_one_line_before_any_work(tmp_path, flags, named):
    result = run_inline("recipes", *flags, "--out-dir", tmp_path / "reports", "--work-dir", tmp_path / "work")
    assert_one_line_error(result, named)
    assert not (tmp_path / "reports").exists() and not (tmp_path / "work").exists()


@pytest.mark.slow
def test_the_study_trains_each_recipe_once_and_scores_it_from_shared_noise(pipeline, tmp_path, default_precision):
    ckpt = pipeline["ckpt"]
    args = ["--data-dir", pipeline["data"], "--classifier", ckpt / "classifier.safetensors",
            "--vae", ckpt / "vae.safetensors", "--latents", ckpt / "latents.safetensors", *SMOKE,
            "--recipes", "posterior-mean", "kl-0.01", "--budget-minutes", 0.02, "--num-images", 16,
            "--out-dir", tmp_path, "--work-dir", tmp_path / "work"]
    run_script("recipes", *args, "--seeds", 0, 1)
    report = json.loads((tmp_path / "recipes.json").read_text())
    assert [r["recipe"] for r in report["rows"]] == ["baseline", "posterior-mean", "kl-0.01"]
    work = tmp_path / "work"
    for row in report["rows"]:
        path = work / f"{row['recipe']}.safetensors"
        info = load_checkpoint(path, "unet").info
        own_vae = bool(RECIPES[row["recipe"]].vae_model)
        vae_path = work / f"{row['recipe']}.vae.safetensors" if own_vae else ckpt / "vae.safetensors"
        vae = load_checkpoint(vae_path, "vae")
        assert info["vae_fingerprint"] == vae.fingerprint
        assert row["vae_seconds"] == (vae.info["charged_seconds"] if own_vae else None)
        assert info["training"]["steps"] == row["steps"] >= 1
        # the run ends with the first step past the budget (checks left out of the clock)
        assert row["train_seconds"] == info["charged_seconds"] >= 60 * 0.02
        assert info["latent_target"] == RECIPES[row["recipe"]].latent_target
        # every cell scored again here, independently: same noise, same images, same FID
        pipe = LatentDiffusion.load(path, vae_path, "cpu")
        images = pipe.sample(16, SamplerConfig.for_branch(unconditional=True), Prompt("none"), seed=1)
        assert row["scores"]["1"]["no label"]["fid"] == pytest.approx(fid_of_test_set(pipeline)(images), rel=1e-9)
        generator = torch.Generator().manual_seed(1)
        real = validation_images(load_mnist(pipeline["data"], "train")[0], 16, generator)
        images = vae_reconstructions(pipe.vae, real, generator, torch.device("cpu"))
        assert row["scores"]["1"]["VAE reconstruction"]["fid"] == pytest.approx(fid_of_test_set(pipeline)(images),
                                                                                rel=1e-9)
        assert 0 <= row["scores"]["0"]["digits 0-9"]["recognised"] <= 1
    # the means' own scale factor is recorded with the UNet, so its samples decode at the VAE's scale
    assert load_checkpoint(work / "posterior-mean.safetensors", "unet").info["scale_factor"] != \
        load_checkpoint(work / "baseline.safetensors", "unet").info["scale_factor"]
    # the recipe's own VAE, trained with its KL weight, and the latent cache it encoded
    own = load_checkpoint(work / "kl-0.01.vae.safetensors", "vae")
    assert own.config["beta"] == 0.01 and own.info["charged_seconds"] > 0
    assert load_checkpoint(work / "kl-0.01.latents.safetensors", "latents").info["vae_fingerprint"] == own.fingerprint
    assert paired_differences(report["rows"][1], report["rows"][0], "VAE reconstruction") == [0.0, 0.0]
    table = (tmp_path / "recipes.md").read_text()
    diffs = paired_differences(report["rows"][1], report["rows"][0], "random digits")
    assert f"{sum(diffs) / 2:+.2f} ({diffs[0]:+.2f}/{diffs[1]:+.2f})" in table

    # a rerun with one more seed reuses every trained recipe (and VAE, and cache) and scores only the new seed
    stamps = {p.name: p.stat().st_mtime_ns for p in work.glob("*.safetensors")}
    again = run_script("recipes", *args, "--seeds", 0, 1, 2)
    assert "budget" not in again.stdout  # nothing calibrated or trained
    assert {p.name: p.stat().st_mtime_ns for p in work.glob("*.safetensors")} == stamps
    report2 = json.loads((tmp_path / "recipes.json").read_text())
    assert report2["rows"][0]["scores"]["0"] == report["rows"][0]["scores"]["0"]
    assert set(report2["rows"][0]["scores"]) == {"0", "1", "2"}
    assert (tmp_path / "recipes.png").stat().st_size > 0
