"""The pretraining run in MLflow: its parameters, the MLM loss per step, the card as artifact.

Why its own run, kept across resumes: pretraining is not an iteration of the loop, and a
budget spent over several killed-and-resumed invocations is one training, so the run id is
kept in the work directory and every resume logs into the same run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sentirefine.config import Config, PretrainConfig
from sentirefine.data.store import Store

RUN_FILE = "mlflow_run.json"


class MlflowRun:
    """The pretraining run in the workspace's experiment: params, the MLM loss curve, the card.

    Its id is kept in the work directory, so a resumed pretraining logs into the same run.
    With tracking off every method does nothing.
    """

    def __init__(self, config: Config, store: Store, work: Path, params: PretrainConfig,
                 corpus: dict[str, Any]) -> None:
        """Reopen the run of an earlier invocation, or create it and log the parameters once."""
        self.tracker: Any = None
        if not config.tracking.enabled:
            return
        from sentirefine.integrations.tracking import Tracker

        self.tracker = Tracker(config)
        run_file = work / RUN_FILE
        if run_file.is_file():
            self.run_id = json.loads(run_file.read_text())["run_id"]
            return
        run = self.tracker.client.create_run(
            self.tracker.experiment_id, run_name="pretrain",
            tags={"sentirefine.command": "pretrain", "sentirefine.data.workspace": store.workspace_id()})
        self.run_id = run.info.run_id
        run_file.write_text(json.dumps({"run_id": self.run_id}))
        flat = {f"pretrain.{k}": v for k, v in params.model_dump(mode="json").items()}
        flat.update({"corpus.rows": corpus["rows"], "corpus.train_rows": corpus["train_rows"],
                     "corpus.gold_texts_excluded": corpus["gold_texts_excluded"],
                     "corpus.extra": ",".join(Path(p).name for p in corpus["extra_rows"]) or "none"})
        self.tracker._log_batch(self.run_id, params=flat)

    def log(self, step: int, loss: float) -> None:
        """One point of the MLM loss curve."""
        if self.tracker is not None:
            self.tracker._log_batch(self.run_id, metrics={"mlm_loss": loss}, step=step)

    def finish(self, card: Path) -> None:
        """Attach the card, log the totals and end the run."""
        if self.tracker is None:
            return
        self.tracker.client.log_artifact(self.run_id, str(card))
        summary = json.loads(card.read_text(encoding="utf-8"))["training"]
        self.tracker._log_batch(self.run_id, metrics={"steps": summary["steps"], "seconds": summary["seconds"]},
                                step=summary["steps"])
        self.tracker.client.set_terminated(self.run_id)
