"""Where the logged scalars go: ``metrics.jsonl``, TensorBoard, Weights & Biases, MLflow.

``run.loggers`` names the backends; :func:`open_loggers` opens them on the main process
(the other processes log nothing) and returns one :class:`LoggerGroup` that the trainer
calls once per record. Every backend resumes with the run:

- ``jsonl`` drops the records after the checkpoint's step
  (:class:`~patchdino.train.metrics.MetricsWriter`); ``tensorboard`` hides the events from
  the step after it on (``purge_step``);
- ``wandb`` and ``mlflow`` log to the same tracker run again: its id is kept in the run
  folder's ``trackers.json``. Neither can take back a step, so a step that runs again after
  a kill keeps the values first logged there: W&B ignores a step below the last it holds,
  and :class:`MlflowLogger` skips the steps its run already holds. A resumed run repeats
  its steps exactly (on GPUs up to their non-deterministic reductions), so the values kept
  are those it logs again.

``wandb`` and ``mlflow`` are optional packages (the extras ``patchdino[wandb]`` and
``patchdino[mlflow]``), imported only when a run opens them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from patchdino.config import Config, flatten_tree
from patchdino.error_text import first_line
from patchdino.errors import InputError
from patchdino.train.metrics import MetricsWriter

TRACKER_IDS = "trackers.json"
"""File of the run folder that keeps the W&B and MLflow run ids (``{"wandb": id, ...}``)."""

EXTRA_MODULES = {"wandb": "wandb", "mlflow": "mlflow"}
"""Module each optional logger imports; its extra (``patchdino[name]``) has the logger's name."""


class Logger(Protocol):
    """One destination of the logged scalars."""

    def log(self, record: Mapping[str, Any], step: int) -> None:
        """Log one record (``step`` is also its ``"step"`` entry, 1-based)."""

    def flush(self) -> None:
        """Make everything logged so far durable (called before each checkpoint)."""

    def close(self) -> None:
        """Flush, then let go of files, processes and runs."""


def _missing_message(name: str) -> str:
    module = EXTRA_MODULES[name]
    return (
        f"run.loggers includes {name}, which needs the {module} package: "
        f"pip install 'patchdino[{name}]'"
    )


def require_logger_packages(names: Iterable[str]) -> None:
    """Refuse a run whose loggers need a package that is not installed, without importing it.

    Raises:
        InputError: naming the first such logger and the pip command that installs it.
    """
    for name in names:
        module = EXTRA_MODULES.get(name)
        if module is None:
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except ValueError:  # in sys.modules without a spec: imported some other way
            found = True
        if not found:
            raise InputError(_missing_message(name))


def _import_extra(name: str) -> ModuleType:
    """The optional package of logger ``name``; InputError naming the pip command if missing."""
    try:
        return importlib.import_module(EXTRA_MODULES[name])
    except ImportError as err:
        raise InputError(f"{_missing_message(name)} ({first_line(err)})") from err


def _numbers(record: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of ``record`` but ``step`` (the axis), as floats (NaN kept)."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def read_tracker_id(output: Path, name: str) -> str | None:
    """The run id that logger ``name`` keeps in the run folder ``output``, or None."""
    path = output / TRACKER_IDS
    if not path.exists():
        return None
    value = json.loads(path.read_text()).get(name)
    return str(value) if value is not None else None


def keep_tracker_id(output: Path, name: str, run_id: str) -> None:
    """Record logger ``name``'s run id in the run folder (written beside, then renamed over)."""
    path = output / TRACKER_IDS
    ids = json.loads(path.read_text()) if path.exists() else {}
    ids[name] = run_id
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(ids, indent=1) + "\n")
    os.replace(tmp, path)


class JsonlLogger:
    """``metrics.jsonl``: every record, one JSON object per line (non-finite values as null)."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self._writer = MetricsWriter(path, resume_step=resume_step)

    def log(self, record: Mapping[str, Any], step: int) -> None:
        self._writer.write(dict(record))

    def flush(self) -> None:
        """Nothing to do: each record is flushed as it is written."""

    def close(self) -> None:
        self._writer.close()


def tensorboard_writer(folder: Path, purge_step: int) -> Any:
    """Event writer; events from ``purge_step`` on (left by a killed run) are hidden.

    TensorBoard reads the event files of a folder in name order, and names start with the
    creation time in whole seconds followed by the host and the process id. A run resumed
    within the same second as the previous file was created could sort before it and so
    lose the earlier steps; the writer is therefore created only once the clock has passed
    the newest existing file's second.
    """
    from torch.utils.tensorboard import SummaryWriter

    names = (p.name.split(".") for p in folder.glob("events.out.tfevents.*"))
    stamps = [int(parts[3]) for parts in names if len(parts) > 3 and parts[3].isdigit()]
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)
    return SummaryWriter(str(folder), purge_step=purge_step if purge_step > 1 else None)


class TensorBoardLogger:
    """``tensorboard/``: the float entries of each record as scalars at their step."""

    def __init__(self, folder: Path, resume_step: int) -> None:
        self._writer = tensorboard_writer(folder, purge_step=resume_step + 1)

    def log(self, record: Mapping[str, Any], step: int) -> None:
        for key, value in record.items():
            if key != "step" and isinstance(value, float):
                self._writer.add_scalar(key, value, step)

    def flush(self) -> None:
        self._writer.flush()  # events up to the checkpoint survive a kill

    def close(self) -> None:
        self._writer.close()


class WandbLogger:
    """A Weights & Biases run: ``wandb.init`` in the run folder (its files go to ``wandb/``).

    The run id is kept in ``trackers.json`` before the run starts, so a resumed run (or a
    rerun after a failed start) logs to the same W&B run (``resume="allow"``). Online or
    offline, entity and API key are W&B's own settings (``WANDB_MODE``, ``WANDB_ENTITY``,
    ``WANDB_API_KEY``...). The record's numbers are logged at ``step=`` their step.

    Raises:
        InputError: the wandb package is missing, or W&B refuses to start the run (no API
            key online, for example).
    """

    def __init__(self, output: Path, project: str, config: Mapping[str, Any]) -> None:
        wandb = _import_extra("wandb")
        run_id = read_tracker_id(output, "wandb")
        if run_id is None:
            run_id = secrets.token_hex(6)  # W&B's ids are letters and digits
            keep_tracker_id(output, "wandb", run_id)
        try:
            self._run = wandb.init(
                project=project,
                dir=str(output),
                id=run_id,
                name=output.resolve().name,
                resume="allow",
                reinit="create_new",
                config=dict(config),
            )
        except wandb.errors.Error as err:
            raise InputError(
                f"run.loggers includes wandb, which could not start W&B run {run_id}: "
                f"{first_line(err)}"
            ) from err
        self.run_id = run_id

    def log(self, record: Mapping[str, Any], step: int) -> None:
        self._run.log(_numbers(record), step=step)

    def flush(self) -> None:
        """Nothing to do: W&B's service process writes (and uploads) the run as it goes."""

    def close(self) -> None:
        self._run.finish()


_PARAMS_PER_BATCH = 100
"""The most parameters MLflow takes in one ``log_batch`` call."""


class MlflowLogger:
    """An MLflow run in the experiment ``project``.

    The tracking store is MLflow's own setting (``MLFLOW_TRACKING_URI``, or
    ``mlflow.set_tracking_uri`` in the same process); without one it is the file store
    ``mlruns/`` in the run folder (MLflow keeps its file store behind
    ``MLFLOW_ALLOW_FILE_STORE``, which is then set to true unless it is set already). A new
    run logs the flattened configuration once, as parameters (MLflow cannot change them
    later); its id is kept in ``trackers.json`` and a resumed run continues that run,
    skipping the steps it already holds. Metrics are sent in the background and waited for
    at each :meth:`flush` (before each checkpoint) and at :meth:`close`.

    Raises:
        InputError: the mlflow package is missing, or the run id kept in the run folder is
            not in the tracking store.
    """

    def __init__(self, output: Path, project: str, config: Mapping[str, Any]) -> None:
        mlflow = _import_extra("mlflow")
        from mlflow.tracking import MlflowClient

        if mlflow.is_tracking_uri_set():
            self.tracking_uri = str(mlflow.get_tracking_uri())
        else:
            self.tracking_uri = (output / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        self._pending: list[Any] = []
        self._logged = 0
        """The last step the run holds; the steps up to it are not logged again."""
        run_id = read_tracker_id(output, "mlflow")
        if run_id is None:
            self.run_id = self._new_run(output, project, config)
        else:
            self.run_id = run_id
            self._continue_run(output)

    def _new_run(self, output: Path, project: str, config: Mapping[str, Any]) -> str:
        """Start a run named after the run folder, keep its id, log the parameters."""
        from mlflow.entities import Param

        client = self._client
        experiment = client.get_experiment_by_name(project)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            experiment_id = client.create_experiment(project)
        run = client.create_run(experiment_id, run_name=output.resolve().name)
        run_id = str(run.info.run_id)
        keep_tracker_id(output, "mlflow", run_id)
        params = [Param(key, str(value)) for key, value in flatten_tree(config).items()]
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[start : start + _PARAMS_PER_BATCH])
        return run_id

    def _continue_run(self, output: Path) -> None:
        """Mark the kept run as running again and find the last step it holds."""
        from mlflow.exceptions import MlflowException

        client, run_id = self._client, self.run_id
        try:
            run = client.get_run(run_id)
        except MlflowException as err:
            raise InputError(
                f"{output / TRACKER_IDS} names MLflow run {run_id}, which the tracking store "
                f"{self.tracking_uri} does not hold ({first_line(err)}): set "
                "MLFLOW_TRACKING_URI to the store it was logged to, or remove the file's mlflow "
                "entry to start a new MLflow run"
            ) from err
        client.update_run(run_id, status="RUNNING")
        history = (client.get_metric_history(run_id, key) for key in run.data.metrics)
        self._logged = max((m.step for metric in history for m in metric), default=0)

    def log(self, record: Mapping[str, Any], step: int) -> None:
        if step <= self._logged:
            return  # logged before a kill; the resumed run repeats it with the same values
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in _numbers(record).items()]
        sent = self._client.log_batch(self.run_id, metrics=metrics, synchronous=False)
        self._pending.append(sent)
        self._logged = step

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for operations in pending:
            operations.wait()

    def close(self) -> None:
        self.flush()
        self._client.set_terminated(self.run_id)


class LoggerGroup:
    """Several loggers called as one, in order (``run.loggers``'s); empty off the main process."""

    def __init__(self, loggers: Sequence[Logger] = ()) -> None:
        self.loggers = list(loggers)

    def log(self, record: Mapping[str, Any], step: int) -> None:
        for logger in self.loggers:
            logger.log(record, step)

    def flush(self) -> None:
        for logger in self.loggers:
            logger.flush()

    def close(self) -> None:
        """Close every logger, also when one fails (the first failure is raised after)."""
        failure: BaseException | None = None
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as err:
                failure = failure or err
        self.loggers = []
        if failure is not None:
            raise failure


def open_loggers(config: Config, output: Path, resume_step: int, main: bool = True) -> LoggerGroup:
    """The loggers of ``config.run.loggers`` for the run folder ``output``.

    Args:
        config: the run's configuration (W&B's config and MLflow's parameters record it).
        output: the run folder, which exists.
        resume_step: the step the run starts from (0: a new run).
        main: whether this is the main process; the others get an empty group.

    Raises:
        InputError: a logger's package is missing or its tracker refuses the run. The loggers
            opened before it are closed.
    """
    if not main:
        return LoggerGroup()
    settings = config.to_dict()
    project = config.run.tracker_project
    group = LoggerGroup()
    try:
        for name in config.run.loggers:
            logger: Logger
            if name == "jsonl":
                logger = JsonlLogger(output / "metrics.jsonl", resume_step)
            elif name == "tensorboard":
                logger = TensorBoardLogger(output / "tensorboard", resume_step)
            elif name == "wandb":
                logger = WandbLogger(output, project, settings)
            elif name == "mlflow":
                logger = MlflowLogger(output, project, settings)
            else:
                raise ValueError(f"unknown logger {name!r}")  # the config's check refuses it
            group.loggers.append(logger)
    except BaseException:
        with contextlib.suppress(Exception):  # the first failure is the one to report
            group.close()
        raise
    return group
