"""One iteration's registered models as one MLflow model directory: every checkpoint stored once.

Registering each member and the ensemble with ``log_model`` copies a checkpoint into every version
that serves it (BERT into its member version and into the ensemble's). Instead, an iteration logs
one directory into its run's artifacts, and every version it registers points into it::

    registered/ensemble/            the ensemble's MLflow model (MLmodel, ensemble_model.py, signature,
      MLmodel                       input example): the source of <prefix>-ensemble's version
      artifacts/ensemble.json       the EnsembleSpec the evaluate stage fitted
      artifacts/<member>/           a complete MLflow model of the member: the source of <prefix>-<member>'s
        MLmodel                     version (a member version downloads and loads this folder alone)
        artifacts/<member>/         the member's checkpoint, the only copy in the artifact store

Both are models from code (:mod:`~sentirefine.integrations.model_code`) with a signature and an
input example, as MLflow recommends; :func:`check` loads each one and predicts the example before
anything is registered, as ``log_model`` would, so a version that cannot serve never exists.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from sentirefine.ensemble.spec import EnsembleSpec

# Where in an iteration run's artifacts the bundle lies; member models under it at artifacts/<member>.
ARTIFACT_PATH = "registered/ensemble"
_PIP = ["sentirefine"]


def build(folder: Path, checkpoints: Path, spec: EnsembleSpec) -> Path:
    """Write the bundle for ``spec``'s members (checkpoints in ``checkpoints/<member>``) under ``folder``."""
    import mlflow.pyfunc

    from sentirefine.integrations import model_code
    from sentirefine.integrations.serving import INPUT_EXAMPLE, SPEC_ARTIFACT, signature

    members = folder / "members"
    for name in spec.members:
        mlflow.pyfunc.save_model(members / name, python_model=str(model_code.MEMBER),
                                 artifacts={"member": str(checkpoints / name)}, signature=signature(ensemble=False),
                                 input_example=INPUT_EXAMPLE, pip_requirements=_PIP)
    spec_file = folder / "ensemble.json"
    spec_file.write_text(spec.to_json(), encoding="utf-8")
    ensemble = folder / "ensemble"
    artifacts = {name: str(members / name) for name in spec.members} | {SPEC_ARTIFACT: str(spec_file)}
    mlflow.pyfunc.save_model(ensemble, python_model=str(model_code.ENSEMBLE), artifacts=artifacts,
                             signature=signature(ensemble=True), input_example=INPUT_EXAMPLE, pip_requirements=_PIP)
    return ensemble


def member_path(name: str) -> str:
    """A member's model folder relative to the bundle (what its version's source adds to the bundle's)."""
    return f"artifacts/{name}"


def check(ensemble: Path, members: list[str]) -> None:
    """Load the ensemble and each member model as a server would and predict the input example."""
    import mlflow.pyfunc

    from sentirefine.integrations.serving import INPUT_EXAMPLE

    for path in [ensemble, *(ensemble / member_path(name) for name in members)]:
        out = mlflow.pyfunc.load_model(str(path)).predict(INPUT_EXAMPLE)
        if len(out) != len(INPUT_EXAMPLE):
            raise RuntimeError(f"{path} answered {len(out)} rows for {len(INPUT_EXAMPLE)}")


def local_dir(uri: str | None) -> Path | None:
    """The local folder a ``file:`` (or plain path) URI names; None for any other scheme."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(url2pathname(parsed.path))


def remove_local(folder: Path | None, workspace: Path) -> None:
    """Delete ``folder`` where it lies inside ``workspace`` (the embedded store's ``mlartifacts``):
    nothing outside it is ever deleted; a remote store's files go with the server's own ``mlflow gc``."""
    if folder is not None and folder.resolve().is_relative_to(workspace.resolve()):
        shutil.rmtree(folder, ignore_errors=True)
