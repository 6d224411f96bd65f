"""The offline default: shipped digits model and classifiers, and `fkdiff demo` (small settings)."""

import json

import pytest
import torch

from fkdiff.digits import ASSETS, load_classifier, load_demo_pipeline

pytestmark = pytest.mark.skipif(not (ASSETS / "digits-ddpm").is_dir(), reason="demo assets not built")

SMALL = dict(num_images=2, budget=3, steps=8, budgets_for_plot=(1, 3))


def test_shipped_model_and_classifiers_load_offline():
    pipe = load_demo_pipeline()
    assert pipe.unet.config.sample_size == 16 and pipe.unet.config.in_channels == 1
    for name in ("digits-classifier", "digits-evaluator"):
        clf = load_classifier(ASSETS / name)
        assert clf(torch.rand(3, 1, 16, 16)).shape == (3, 10)
    report = json.loads((ASSETS / "digits-report.json").read_text())
    assert report["reward_classifier_test_accuracy"] > 0.9 and report["evaluation_classifier_test_accuracy"] > 0.9
    assert type(load_classifier(ASSETS / "digits-classifier")) is not type(load_classifier(ASSETS / "digits-evaluator"))


def test_demo_writes_a_new_folder_with_a_valid_report(tmp_path):
    from fkdiff.demo import run_demo

    folder, report = run_demo(3, out_root=tmp_path, **SMALL)
    assert sorted(p.name for p in folder.iterdir()) == ["grid.png", "report.json", "reward_vs_nfe.png"]
    on_disk = json.loads((folder / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    jsonschema = pytest.importorskip("jsonschema")
    from fkdiff.demo import DEMO_REPORT_SCHEMA

    jsonschema.validate(on_disk, DEMO_REPORT_SCHEMA)
    broken = json.loads(json.dumps(on_disk))
    broken["methods"]["plain"]["eval_accuracy"] = 1.5  # the schema can fail
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, DEMO_REPORT_SCHEMA)
    assert set(on_disk) >= {"task", "settings", "methods", "reward_vs_nfe", "total_seconds", "environment", "files"}
    assert set(on_disk["methods"]) == {"plain", "best-of-N", "zero-order", "FK steering"}
    for m in on_disk["methods"].values():
        assert set(m) == {"nfe_per_image", "seconds", "reward_mean", "eval_accuracy", "eval_confidence"}
        assert m["reward_mean"] <= 0 and 0 <= m["eval_accuracy"] <= 1 and m["nfe_per_image"] >= 8
    assert on_disk["methods"]["FK steering"]["nfe_per_image"] == on_disk["methods"]["best-of-N"]["nfe_per_image"]
    assert on_disk["settings"]["seed"] == 0
    # a second run never overwrites the first
    folder2, report2 = run_demo(3, out_root=tmp_path, **SMALL)
    assert folder2 != folder and (folder / "report.json").exists()
    # same seed, same results (timings aside)
    for name, m in report["methods"].items():
        assert {k: v for k, v in m.items() if k != "seconds"} == {
            k: v for k, v in report2["methods"][name].items() if k != "seconds"
        }


def test_cli_demo(tmp_path, capsys):
    from fkdiff.cli import main

    assert main(["demo", "--images", "1", "--budget", "2", "--steps", "5", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "FK steering" in out and "report.json" in out
    with pytest.raises(SystemExit):
        main(["demo", "--digit", "12"])
