"""`fkdiff generate`: the shipped digits model and a tiny SD pipeline saved locally; report schema; errors."""

from __future__ import annotations

import json

import pytest
import torch

from fkdiff.cli import main
from fkdiff.digits import ASSETS
from fkdiff.generate import REPORT_SCHEMA, parse_reward_spec, read_prompts, resolve_device, resolve_dtype

jsonschema = pytest.importorskip("jsonschema")
needs_assets = pytest.mark.skipif(not (ASSETS / "digits-ddpm").is_dir(), reason="demo assets not built")


def _run(args, tmp_path):
    """Run the CLI in-process; returns the report of the one new folder it wrote."""
    before = set(tmp_path.glob("generate-*"))
    assert main(["generate", *args, "--out", str(tmp_path)]) == 0
    (folder,) = set(tmp_path.glob("generate-*")) - before
    report = json.loads((folder / "report.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert sorted(p.name for p in folder.iterdir()) == sorted(report["files"])
    return folder, report


@needs_assets
@pytest.mark.parametrize("method,nfe", [("plain", 6), ("fk", 3 * 6), ("search", 3 * 6)])
def test_generate_on_the_shipped_model(method, nfe, tmp_path, capsys):
    args = ["--method", method, "--num-images", "2", "--steps", "6", "--particles", "3", "--seed", "5"]
    if method != "plain":
        args += ["--reward", "digit-3"]
    folder, report = _run(args, tmp_path)
    assert report["family"] == "unconditional" and report["method"] == method
    assert report["nfe_per_image"] == nfe  # denoiser rows per image: steps × particles (or candidates)
    assert len(report["images"]) == 2
    if method == "plain":
        assert all(img["reward"] is None for img in report["images"])
    else:
        assert all(img["reward"] == img["rewards"]["digit-3"] <= 0 for img in report["images"])
    assert "grid.png" in capsys.readouterr().out
    broken = {**report, "images": [{**report["images"][0], "file": "../escape.png"}]}
    with pytest.raises(jsonschema.ValidationError):  # the schema can fail
        jsonschema.validate(broken, REPORT_SCHEMA)
    # same seed, same images and rewards, in a new folder
    folder2, report2 = _run(args, tmp_path)
    assert folder2 != folder
    assert report2["images"] == report["images"]
    for img in report["images"]:
        assert (folder / img["file"]).read_bytes() == (folder2 / img["file"]).read_bytes()


@needs_assets
@pytest.mark.parametrize("kind", ["random", "zero-order", "paths"])
def test_every_search_saves_winners_that_regenerate(kind, tmp_path):
    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file

    from fkdiff.digits import load_demo_pipeline
    from fkdiff.pipelines import NoiseSearchPipeline

    args = ["--method", "search", "--search", kind, "--particles", "2", "--rounds", "2", "--steps", "8"]
    folder, report = _run([*args, "--num-images", "2", "--reward", "digit-5"], tmp_path)
    assert report["search"] == kind and report["nfe_per_image"] >= 2 * 8
    noises = load_file(str(folder / "noises.safetensors"))
    assert sorted(noises) == sorted(i["file"][:-4] for i in report["images"])
    if kind != "paths":  # a path winner is its lineage of re-noisings, not one noise
        import diffusers

        pipe = load_demo_pipeline()
        scheduler_class = getattr(diffusers, report["settings"]["scheduler"])  # the one the search ran with
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
        for img in report["images"]:
            again = NoiseSearchPipeline.from_pipe(pipe).regenerate(None, noises[img["file"][:-4]], 8)
            saved = torch.from_numpy(np.array(Image.open(folder / img["file"]))).float() / 255
            assert (again[0, 0] - saved).abs().max() <= 1 / 255 + 1e-6


@needs_assets
def test_fk_steers_toward_the_digit_on_the_shipped_model(tmp_path):
    """More particles, higher reward: FK with K = 8 beats plain sampling's reward on the same seeds."""
    base = ["--num-images", "4", "--steps", "20", "--reward", "digit-3", "--seed", "1"]
    _, fk = _run(["--method", "fk", "--particles", "8", "--lmbda", "1", *base], tmp_path)
    _, k1 = _run(["--method", "fk", "--particles", "1", *base], tmp_path)
    mean = lambda r: sum(i["reward"] for i in r["images"]) / len(r["images"])  # noqa: E731
    assert mean(fk) > mean(k1)


@pytest.fixture(scope="module")
def tiny_sd_folder(tmp_path_factory):
    from fkdiff.testing import tiny_sd_pipeline

    folder = tmp_path_factory.mktemp("tiny-sd")
    tiny_sd_pipeline(sample_size=32).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_reward_sources(tmp_path_factory):
    pytest.importorskip("open_clip")
    from fkdiff.testing import tiny_imagereward_checkpoint, tiny_open_clip

    d = tmp_path_factory.mktemp("rewards")
    model = tiny_open_clip(d, "fkdiff-generate-clip")
    torch.save(model.state_dict(), d / "clip.pt")
    return {
        "clip": f"fkdiff-generate-clip:{d / 'clip.pt'}",
        "imagereward": str(tiny_imagereward_checkpoint(d / "imagereward")),
    }


def test_generate_sd_with_two_weighted_rewards_and_a_prompts_file(tiny_sd_folder, tiny_reward_sources, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# comment\na red car\n\ntwo dogs\n")
    args = ["--model", str(tiny_sd_folder), "--prompt", "a cat", "--prompts-file", str(prompts)]
    args += ["--method", "fk", "--particles", "2", "--steps", "4", "--guidance", "3"]
    args += ["--reward", "imagereward:2", "--reward", "clip:0.5"]
    for name, src in tiny_reward_sources.items():
        args += ["--reward-source", f"{name}={src}"]
    folder, report = _run(args, tmp_path / "out")
    assert report["family"] == "sd"
    assert [i["prompt"] for i in report["images"]] == ["a cat", "a red car", "two dogs"]
    assert report["settings"]["scheduler"] in ("DDIMScheduler", "DDPMScheduler")
    assert report["nfe_per_image"] == 2 * 2 * 4  # CFG halves × K × steps
    for img in report["images"]:
        parts = img["rewards"]
        assert img["reward"] == pytest.approx(2 * parts["imagereward"] + 0.5 * parts["clip"], rel=1e-5, abs=1e-5)
    assert report["images"][0]["file"] == "000-a-cat.png"
    from PIL import Image

    assert Image.open(folder / "000-a-cat.png").size == (32, 32)


def test_generate_sd_search_and_plain(tiny_sd_folder, tiny_reward_sources, tmp_path):
    common = ["--model", str(tiny_sd_folder), "--prompt", "a cat", "--steps", "3"]
    src = ["--reward-source", f"imagereward={tiny_reward_sources['imagereward']}"]
    _, search = _run([*common, "--method", "search", "--particles", "3", "--reward", "imagereward", *src], tmp_path)
    assert search["nfe"] == 3 * 3 * 2 and search["settings"]["scheduler"] == "DDIMScheduler"
    assert search["settings"]["scheduler_stochastic"] is False
    _, plain = _run([*common, "--method", "plain"], tmp_path)
    assert plain["nfe"] == 3 * 2 and plain["images"][0]["reward"] is None
    _, bf16 = _run(
        [*common, "--method", "fk", "--particles", "2", "--dtype", "bfloat16", "--reward", "imagereward", *src],
        tmp_path,
    )
    assert bf16["settings"]["dtype"] == "bfloat16" and isinstance(bf16["images"][0]["reward"], float)


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_generate_fk_on_other_families(family, tiny_reward_sources, tmp_path):
    """FK needs fresh noise per step: flow-matching pipelines get stochastic FlowMatch-Euler."""
    import fkdiff.testing as testing

    pipe = getattr(testing, f"tiny_{family}_pipeline")()
    pipe.save_pretrained(tmp_path / family)
    args = ["--model", str(tmp_path / family), "--prompt", "a cat", "--steps", "3", "--particles", "2"]
    args += ["--reward", "imagereward", "--reward-source", f"imagereward={tiny_reward_sources['imagereward']}"]
    _, report = _run(args, tmp_path / "out")
    assert report["family"] == family
    sched = report["settings"]["scheduler"]
    assert report["settings"]["scheduler_stochastic"] is True
    if family == "sdxl":  # the tiny SDXL ships Euler-ancestral, already stochastic: kept
        assert sched == "EulerAncestralDiscreteScheduler" and report["settings"]["scheduler_kwargs"] == {}
    else:
        assert sched == "FlowMatchEulerDiscreteScheduler"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "no-such-org/no-such-model", "--prompt", "x", "--method", "plain"], "huggingface-cli download"),
        (["--reward", "nosuch"], "unknown reward 'nosuch'; choose from clip, aesthetic, imagereward"),
        (["--reward", "clip:abc"], "reward weight must be a number"),
        (["--device", "cuda:7", "--method", "plain"], "--device cuda:7"),
        (["--device", "tpu", "--method", "plain"], "--device 'tpu' is not a torch device"),
        (["--dtype", "float16", "--method", "plain"], "float16 needs a GPU"),
        (["--method", "fk"], "needs at least one --reward"),
        (["--prompt", "a cat", "--reward", "digit-1"], "unconditional: it takes no prompts"),
        (["--reward", "digit-1", "--reward-source", "clip=x"], "not among the rewards"),
        (["--prompts-file", "/no/such/file", "--reward", "digit-1"], "no such file"),
        (["--reward", "imagereward"], "huggingface-cli download THUDM/ImageReward ImageReward.pt"),
        (["--reward", "aesthetic"], "pass the local file or its folder"),
    ],
)
def test_helpful_errors(args, message, tmp_path, capsys):
    if "--model" not in args and not (ASSETS / "digits-ddpm").is_dir():
        pytest.skip("demo assets not built")
    assert main(["generate", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not list(tmp_path.glob("generate-*"))  # nothing written on an error


def test_unknown_model_family_is_named(monkeypatch):
    import diffusers

    from fkdiff.generate import load_pipeline

    class Odd(torch.nn.Module):  # loads, but is no family fkdiff knows
        scheduler = diffusers.DDPMScheduler()

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: Odd()))
    with pytest.raises(ValueError, match=r"--model some/odd-model: .*flux"):
        load_pipeline("some/odd-model")


def test_parsers_and_resolvers(tmp_path):
    assert parse_reward_spec("ImageReward:0.25").weight == 0.25
    assert parse_reward_spec("clip").name == "clip"
    with pytest.raises(ValueError, match="finite"):
        parse_reward_spec("clip:inf")
    f = tmp_path / "p.txt"
    f.write_text("one\n# two\n\n three \n")
    assert read_prompts(["zero"], str(f)) == ["zero", "one", "three"]
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="choose from"):
        resolve_dtype("float64", torch.device("cpu"))
