"""logger=tensorboard|csv|wandb|mlflow|none: each tracker gets the metrics in its local store, and a
resumed run continues the same tracker run (metrics.jsonl is written whatever the choice)."""

from __future__ import annotations

import csv
import importlib.util

import pytest

import maml_cli as mc

TINY = ["train.progress=false", "train.plots=false", "train.steps=10", "train.eval_every=5"]


def _train(run_dir, logger, steps):
    return mc.train("sinusoid_tiny", [*TINY, f"logger={logger}", f"train.steps={steps}"], run_dir=run_dir)


def test_csv_and_tensorboard_and_none(tmp_path):
    _train(tmp_path / "csv", "csv", 10)
    _train(tmp_path / "csv", "csv", 20)  # resumed: rows after step 10 would be written once
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val = [(int(r["step"]), float(r["value"])) for r in rows if r["name"] == "val/mse"]
    assert [s for s, _ in val] == [5, 10, 15, 20]
    jsonl = {r["step"]: r["val/mse"] for r in mc.load_run(tmp_path / "csv").metrics if "val/mse" in r}
    assert dict(val) == pytest.approx(jsonl)
    assert not (tmp_path / "csv" / "tensorboard").exists()

    _train(tmp_path / "none", "none", 10)
    assert not (tmp_path / "none" / "tensorboard").exists() and (tmp_path / "none" / "metrics.jsonl").is_file()
    with pytest.raises(mc.UserError, match="logger option 'wandbb'.*did you mean wandb"):
        mc.compose("sinusoid_tiny", ["logger=wandbb"])


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (the wandb extra)")
def test_wandb_offline(tmp_path):
    _train(tmp_path, "wandb", 10)
    _train(tmp_path, "wandb", 20)
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len({r.name.rsplit("-", 1)[-1] for r in runs}) == 1  # one run id: the resumed session continued it
    logged = b"".join(p.read_bytes() for p in (tmp_path / "wandb").glob("offline-run-*/*.wandb"))
    assert b"val/mse" in logged and b"train/query_loss" in logged


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed (the mlflow extra)")
def test_mlflow_local_store(tmp_path):
    from mlflow.tracking import MlflowClient

    _train(tmp_path, "mlflow", 10)
    _train(tmp_path, "mlflow", 20)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("maml-cli").experiment_id])
    assert len(runs) == 1  # resumed into the same run
    history = client.get_metric_history(runs[0].info.run_id, "val_mse")
    jsonl = {r["step"]: r["val/mse"] for r in mc.load_run(tmp_path).metrics if "val/mse" in r}
    assert {m.step: m.value for m in history} == pytest.approx(jsonl)
    assert runs[0].data.params["algorithm.inner_lr"] == "0.01"
