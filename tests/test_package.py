import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_smc_imports_no_diffusers():
    code = "import sys, fkdiff.smc; print([m for m in sys.modules if m.split('.')[0] in ('diffusers', 'transformers')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_ruff_passes():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (it is in the [dev] extra)")
    out = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in readme and "<!-- main-command -->" in readme
    assert "test-command" in ci
    block = readme.split("<!-- test-command -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0].strip()
    assert "pytest" in block and "venv" in block


def test_cli_bench_prints_table_and_json(tmp_path):
    from fkdiff.cli import main

    out = tmp_path / "rows.json"
    assert (
        main(
            [
                "bench",
                "--particles",
                "1,4",
                "--potentials",
                "diff",
                "--rewards",
                "linear",
                "--groups",
                "32",
                "--steps",
                "20",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert [r["K"] for r in rows] == [1, 4]
    assert all({"tv", "tv_tolerance", "potential", "reward"} <= set(r) for r in rows)


def test_cli_rejects_bad_lists(capsys):
    from fkdiff.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--potentials", "bogus"])
    assert "diff" in capsys.readouterr().err


def test_demo_assets_are_package_data():
    """The shipped model lives inside the package (so a non-editable install has it) and is declared."""
    from pathlib import Path

    import tomllib

    import fkdiff
    from fkdiff.digits import ASSETS

    assert ASSETS.parent == Path(fkdiff.__file__).parent
    root = Path(fkdiff.__file__).parent.parent
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fkdiff"]
    shipped = [p.relative_to(ASSETS.parent).as_posix() for p in ASSETS.rglob("*") if p.is_file()]
    assert shipped and all(any(Path(f).match(pat) for pat in data) for f in shipped), shipped


def test_public_api_names_resolve():
    import fkdiff

    for name in fkdiff.__all__:
        assert getattr(fkdiff, name) is not None, name
    assert fkdiff.ImageReward.__module__ == "fkdiff.rewards.imagereward"


def test_readme_ten_line_example_runs_on_tiny_models(tmp_path, monkeypatch):
    """The README's Python example, pointed at a tiny local SD pipeline and ImageReward checkpoint on the CPU."""
    import re
    from pathlib import Path

    from fkdiff.testing import tiny_imagereward_checkpoint, tiny_sd_pipeline

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Ten lines of Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    lines = [ln for ln in code.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) <= 10, len(lines)
    tiny_sd_pipeline(sample_size=32).save_pretrained(tmp_path / "sd")
    ir = tiny_imagereward_checkpoint(tmp_path / "ir")
    code = code.replace('"stable-diffusion-v1-5/stable-diffusion-v1-5"', repr(str(tmp_path / "sd")))
    code = code.replace("ImageReward.from_pretrained(", f"ImageReward.from_pretrained({str(ir)!r}, ")
    code = code.replace('"cuda"', '"cpu"').replace("torch.float16", "torch.float32")
    code = code.replace("lmbda=10.0,", "lmbda=10.0, num_inference_steps=3, height=32, width=32,")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "apple.png").is_file()
