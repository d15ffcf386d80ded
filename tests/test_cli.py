import json
import subprocess
import sys

import numpy as np
import pytest

from alwidgets.cli import main

KEYS = {"strategy", "labels_to_target", "labels_to_target_median", "saved_vs_random", "auc", "final_acc",
        "seconds_per_round"}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_schema(capsys, tmp_path):
    code, out, err = run(capsys, "simulate", "--strategies", "random,margin", "--repeats", "2", "--budget", "80",
                         "--target-acc", "0.8", "--json", "--no-progress", "--curves", str(tmp_path / "c.csv"),
                         "--plot", str(tmp_path / "p.html"))
    assert code == 0, err
    rows = json.loads(out)
    assert [r["strategy"] for r in rows] == ["random", "margin"]
    for r in rows:
        assert KEYS <= set(r)
        assert r["labels_to_target"] is None or isinstance(r["labels_to_target"], float)
        assert 0 <= r["final_acc"] <= 1 and r["seconds_per_round"] > 0
    assert rows[0]["saved_vs_random"] in (0.0, None)
    assert (tmp_path / "c.csv").read_text().startswith("strategy,repeat,round,n_labels,accuracy")
    assert "plotly" in (tmp_path / "p.html").read_text()[:100000].lower()


def test_markdown_table_by_default(capsys):
    code, out, err = run(capsys, "simulate", "--strategies", "random", "--repeats", "1", "--budget", "30",
                         "--target-acc", "0.95", "--no-progress")
    assert code == 0, err
    assert "| strategy |" in out and "not reached (0/1)" in out


def test_npz_dataset(capsys, tmp_path):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    code, out, err = run(capsys, "simulate", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--strategies", "margin",
                         "--repeats", "1", "--budget", "40", "--target-acc", "0.5", "--json", "--no-progress")
    assert code == 0, err
    assert json.loads(out)[0]["strategy"] == "margin"


@pytest.mark.parametrize("argv, match", [
    (["--strategies", "random,nope"], "unknown strategy 'nope'"),
    (["--target-acc", "0.999"], "--target-acc 0.999: target accuracy 0.999 is above what the model reaches"),
    (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["--seed", "x"], "argument --seed: expected an integer"),
    (["--test-size", "1"], "argument --test-size: must be in (0, 1)"),
    (["--max-items", "5"], "--max-items 5: 5 items are too few to simulate 10 classes"),
    (["--max-items", "0"], "argument --max-items: must be > 0"),
    (["--embedder", "timm:resnet10t", "--model-kwargs", '{"pretrained": false}'],
     "--model-kwargs: 'pretrained' is not a timm.create_model argument here; use --checkpoint"),
    (["--target-acc", "1.5"], "must be in (0, 1]"),
    (["--batch", "0"], "must be > 0"),
    (["--batch", "-3"], "must be > 0"),
    (["--dataset", "folder:/no/such/dir"], "no such folder"),
    (["--dataset", "npz:/no/such.npz"], "no such file"),
    (["--dataset", "fashion-mnist:/no/such"], "missing train-images"),
    (["--dataset", "imagenet"], "unknown --dataset"),
])
def test_bad_arguments_one_line_exit_2(capsys, argv, match):
    code, out, err = run(capsys, "simulate", "--repeats", "1", "--no-progress", *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("alwidgets: error:") and match in err, err


def test_console_script_exit_code():
    p = subprocess.run([sys.executable, "-m", "alwidgets.cli", "simulate", "--batch", "0"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "must be > 0" in p.stderr


def test_demo_copies_the_quickstart_without_overwriting(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--dir", str(tmp_path), "--no-launch")
    assert code == 0, err
    nb = tmp_path / "alwidgets_quickstart.ipynb"
    assert "Session" in nb.read_text() and "jupyterlab" in out
    # JupyterLab opens on the notebook, not on the launcher
    assert f"--LabApp.default_url=/lab/tree/{nb.name}" in out and f"--ServerApp.root_dir={tmp_path.resolve()}" in out
    nb.write_text("{}")
    assert run(capsys, "demo", "--dir", str(tmp_path), "--no-launch")[0] == 0
    assert nb.read_text() == "{}"
    assert run(capsys, "demo", "--dir", str(tmp_path / "nope"), "--no-launch")[0] == 2


def test_demo_segmentation_copies_the_painter_notebook(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "segmentation", "--dir", str(tmp_path), "--no-launch")
    assert code == 0, err
    nb = tmp_path / "alwidgets_segmentation.ipynb"
    assert "session.label(" in nb.read_text() and f"--LabApp.default_url=/lab/tree/{nb.name}" in out
    assert not (tmp_path / "alwidgets_quickstart.ipynb").exists()
    code, _, err = run(capsys, "demo", "painting", "--dir", str(tmp_path), "--no-launch")
    assert code == 2 and "invalid choice: 'painting'" in err and "segmentation" in err


def test_default_target_is_relative_to_the_full_pool(capsys):
    # 60 digits: every label gives well under 0.9, the old absolute default; the run must not be refused
    code, out, err = run(capsys, "simulate", "--max-items", "60", "--strategies", "random,margin", "--repeats", "2",
                         "--budget", "40", "--seed-per-class", "1", "--no-progress")
    assert code == 0, err
    head = out.splitlines()[0]
    full = float(head.split("full-pool accuracy ")[1].split(";")[0])
    target = float(head.split("target accuracy ")[1].split(" ")[0])
    assert full < 0.9 and target == pytest.approx(0.95 * full, abs=0.0011)  # full is printed rounded
    assert "95% of the full-pool accuracy" in head and f"labels to {target:.0%} (mean)" in out
    # the same target in JSON mode: stdout stays JSON, the target goes to stderr
    code, out, err = run(capsys, "simulate", "--max-items", "60", "--strategies", "random", "--repeats", "2",
                         "--budget", "40", "--seed-per-class", "1", "--no-progress", "--json")
    assert code == 0 and json.loads(out)[0]["strategy"] == "random"
    assert f"target accuracy {target:.3f}" in err


def test_absolute_target_is_kept_and_reported(capsys):
    code, out, err = run(capsys, "simulate", "--strategies", "random", "--repeats", "1", "--budget", "40",
                         "--target-acc", "0.5", "--no-progress")
    assert code == 0, err
    assert "target accuracy 0.500 (--target-acc)" in out and "labels to 50% (mean)" in out


def _refuse_work(monkeypatch):
    """Make loading or simulating fail loudly: an argument error must come before any of it."""
    import alwidgets.cli as cli

    def boom(*a, **k):
        raise AssertionError("the data was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "load_features", boom)


@pytest.mark.parametrize("option", ["--curves", "--plot"])
def test_output_paths_checked_before_the_simulation(capsys, tmp_path, monkeypatch, option):
    _refuse_work(monkeypatch)
    for bad, match in ((tmp_path / "nope" / "c.csv", f"folder {tmp_path / 'nope'} does not exist"),
                       (tmp_path, "is a folder; give a file name")):
        code, out, err = run(capsys, "simulate", option, str(bad), "--no-progress")
        assert code == 2 and err.count("\n") == 1 and f"{option} {bad}: " in err and match in err, err


def test_absurd_repeats_refused_before_any_work(capsys, monkeypatch):
    import time

    _refuse_work(monkeypatch)
    t0 = time.perf_counter()
    code, out, err = run(capsys, "simulate", "--repeats", "1000000000", "--no-progress")
    assert code == 2 and "argument --repeats: at most 1000 random splits, got 1000000000" in err
    assert time.perf_counter() - t0 < 5


def test_repeats_whose_splits_would_not_fit_in_memory(capsys, tmp_path, monkeypatch):
    import sys

    sim = sys.modules["alwidgets.simulate"]  # the module (alwidgets.simulate is also the function)
    X = np.zeros((2000, 2048), np.float32)
    y = np.arange(2000) % 4
    np.savez(tmp_path / "big.npz", X=X, y=y)
    monkeypatch.setattr(sim, "simulate", lambda *a, **k: pytest.fail("simulate ran"))
    code, out, err = run(capsys, "simulate", "--dataset", f"npz:{tmp_path / 'big.npz'}", "--repeats", "1000",
                         "--no-progress")
    assert code == 2 and err.count("\n") == 1
    assert "--repeats 1000: the test splits of 2000 x 2048 features would take 3.8 GB; use at most 523" in err
    most = int(err.split("use at most ")[1])
    code, out, err = run(capsys, "simulate", "--dataset", f"npz:{tmp_path / 'big.npz'}", "--repeats", str(most + 1),
                         "--no-progress")
    assert code == 2 and "use at most" in err


def test_max_items_smaller_than_the_classes(capsys, tmp_path):
    # simulate needs every class on both sides of the split: a clear refusal, naming the option
    code, out, err = run(capsys, "simulate", "--max-items", "5", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "--max-items 5:" in err and "give at least 40" in err
    # embed needs no class structure: 5 items are embedded (a plain random subset)
    code, out, err = run(capsys, "embed", "--max-items", "5", "--out", str(tmp_path / "e.npy"))
    assert code == 0, err
    assert np.load(tmp_path / "e.npy").shape == (5, 64)
    assert len((tmp_path / "e.ids.txt").read_text().splitlines()) == 5


def test_readme_commands_parse_and_name_no_private_paths():
    """Every ``alwidgets ...`` command in the README parses with today's options; none points at ../shared."""
    import re
    import shlex
    from pathlib import Path

    from alwidgets.cli import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "../shared" not in readme
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.split("#")[0].strip()
                if part.startswith("alwidgets "):
                    commands.append(shlex.split(part)[1:])
    assert len(commands) >= 6 and ["demo"] in commands
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)  # raises UsageError on an unknown option or a bad value
        assert args.command in ("simulate", "embed", "demo")
