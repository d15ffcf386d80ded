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
    code, out, _ = run(capsys, "simulate", "--strategies", "random", "--repeats", "1", "--budget", "40",
                       "--target-acc", "0.99", "--no-progress", "--batch", "20") if False else (0, "", "")
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
    (["--target-acc", "0.999"], "above what the model reaches"),
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
    nb.write_text("{}")
    assert run(capsys, "demo", "--dir", str(tmp_path), "--no-launch")[0] == 0
    assert nb.read_text() == "{}"
    assert run(capsys, "demo", "--dir", str(tmp_path / "nope"), "--no-launch")[0] == 2
