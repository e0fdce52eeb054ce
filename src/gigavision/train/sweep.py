"""Hyper-parameter sweeps: an Optuna study over recipe fields, each trial one ``train`` call.

Search spaces are ``FIELD=low:high`` (ints when both ends are integers, else floats), ``FIELD=low:high:log``
(log-uniform) or ``FIELD=a,b,c`` (a choice; values read as YAML, so ``true``/``0.1`` keep their type). FIELD is
any recipe field, dotted for nested ones (``augment.color``). Every space is validated against the recipe
before the first trial, so a typo fails in a second, not after an hour of training.

The objective is the model's headline metric on the **validation** split (the test split stays untouched for
the final report); a version without one falls back to the test metrics stored with the model. Trials use
the study's seed (TPE sampler), so the same sweep proposes the same parameters.

Only the best trial's model is kept by default — the others are removed as soon as the study ends (a sweep of
50 trials would otherwise leave 50 model folders); ``keep_all=True`` keeps every one. The study (trials,
parameters, values, model ids) is saved as ``<workspace>/sweeps/<study>.json``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gigavision.errors import InvalidInput
from gigavision.models import store
from gigavision.progress import Progress
from gigavision.train.recipe import load_recipe

if TYPE_CHECKING:
    from gigavision.workspace import Workspace


@dataclass(frozen=True)
class Space:
    """One searched field: a range (``low``..``high``, int or float, optionally log) or a list of choices."""

    field: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def values_to_check(self) -> list[Any]:
        if self.choices:
            return list(self.choices)
        assert self.low is not None and self.high is not None
        return [int(self.low), int(self.high)] if self.integer else [self.low, self.high]

    def suggest(self, trial: Any) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.field, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.field, int(self.low or 0), int(self.high or 0), log=self.log)
        return trial.suggest_float(self.field, float(self.low or 0.0), float(self.high or 0.0), log=self.log)


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidInput(f"--space {spec}: {text!r} is not a number") from exc
    if not math.isfinite(value):
        raise InvalidInput(f"--space {spec}: {text!r} is not a finite number")
    return value


def parse_space(spec: str) -> Space:
    """``FIELD=low:high[:log]`` or ``FIELD=a,b,c``."""
    field, sep, raw = spec.partition("=")
    field, raw = field.strip(), raw.strip()
    if not sep or not field or not raw:
        raise InvalidInput(f"--space {spec!r}: expected FIELD=low:high[:log] or FIELD=a,b,c")
    if ":" in raw:
        parts = raw.split(":")
        log = len(parts) == 3 and parts[2].strip().lower() == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise InvalidInput(f"--space {spec!r}: a range is low:high or low:high:log")
        low, high = _number(parts[0], spec), _number(parts[1], spec)
        if not low < high:
            raise InvalidInput(f"--space {spec!r}: low must be below high")
        if log and low <= 0:
            raise InvalidInput(f"--space {spec!r}: a log range needs low > 0")
        integer = all(re.fullmatch(r"\s*[+-]?\d+\s*", p) for p in parts[:2])
        return Space(field, low, high, log=log, integer=integer)
    choices = tuple(yaml.safe_load(v) if v.strip() else "" for v in raw.split(","))
    if len(choices) < 2:
        raise InvalidInput(f"--space {spec!r}: give at least two choices (a,b) or a range (low:high)")
    return Space(field, choices=choices)


def check_spaces(base: Mapping[str, Any], spaces: Sequence[Space]) -> None:
    """Every space value must make a valid recipe (unknown field or out-of-range value: named now)."""
    if not spaces:
        raise InvalidInput("a sweep needs at least one --space FIELD=...")
    fields = [s.field for s in spaces]
    if len(set(fields)) != len(fields):
        raise InvalidInput(f"--space: a field is given twice ({', '.join(fields)})")
    for space in spaces:
        for value in space.values_to_check():
            try:
                load_recipe(base=base, overrides={space.field: value})
            except InvalidInput as exc:
                raise InvalidInput(f"--space {space.field}={value!r}: {exc}") from exc


def _study_name(ws: Workspace, dataset: str, task: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", f"{dataset.split('@')[0]}-{task}-sweep")
    taken = {p.name for p in store.models_dir(ws).iterdir()} | {p.name for p in store.runs_dir(ws).iterdir()}
    sweeps = Path(ws.root) / "sweeps"
    if sweeps.is_dir():
        taken |= {p.stem for p in sweeps.iterdir()}
    numbers = [int(m.group(1)) for n in taken if (m := re.match(re.escape(stem) + r"-(\d+)", n))]
    return f"{stem}-{max(numbers, default=0) + 1}"


def run_sweep(
    ws: Workspace,
    base: Mapping[str, Any],
    spaces: Sequence[Space],
    trials: int,
    *,
    seed: int = 0,
    keep_all: bool = False,
    progress: Progress | None = None,
    show_bar: bool = False,
) -> dict[str, Any]:
    """Run the study; returns ``{"study", "best": {"trial", "value", "params", "model"}, "trials": [...]}``."""
    import optuna

    from gigavision.train.assess import evaluate_model
    from gigavision.train.trainer import train

    if not 1 <= trials <= 10_000:
        raise InvalidInput(f"--trials must be 1..10000, got {trials}")
    base = dict(base)
    check_spaces(base, spaces)
    first = load_recipe(base=base)
    study_name = _study_name(ws, first.dataset, first.task)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name, direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
    )
    records: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = {s.field: s.suggest(trial) for s in spaces}
        recipe = load_recipe(base=base, overrides=params)
        model_id = f"{study_name}-t{trial.number}"

        def report(done: float, total: float, message: str) -> None:
            if progress is not None:
                fraction = (trial.number + (done / total if total else 0.0)) / trials
                progress(fraction, 1.0, f"trial {trial.number + 1}/{trials} {message}")

        info = train(ws, recipe, model_id=model_id, progress=report, show_bar=show_bar)
        split = recipe.val_split
        if split in _splits(ws, info.dataset):
            result = evaluate_model(ws, info, info.dataset, split)
            headline, metrics = result["headline"], result["metrics"]
        else:  # no validation split: the test metrics the trainer stored
            split, headline, metrics = str(info.card.evaluated_on), info.headline, info.metrics
        value = metrics.get(headline) if headline else None
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInput(f"trial {trial.number}: model {model_id} has no {headline or 'headline'} metric")
        records.append(
            {
                "trial": trial.number,
                "params": params,
                "model": model_id,
                "value": float(value),
                "metric": headline,
                "split": split,
            }
        )
        return float(value)

    try:
        study.optimize(objective, n_trials=trials, catch=())
    finally:
        best = max(records, key=lambda r: r["value"]) if records else None
        if not keep_all:
            for r in records:
                if best is None or r["model"] != best["model"]:
                    store.remove_model(ws, r["model"])
                    r["removed"] = True
    assert best is not None
    summary = {"study": study_name, "base": base, "seed": seed, "best": best, "trials": records}
    folder = Path(ws.root) / "sweeps"
    folder.mkdir(exist_ok=True)
    store.write_json(folder / f"{study_name}.json", summary)
    return summary


def _splits(ws: Workspace, dataset: str) -> set[str]:
    from gigavision.datasets.versions import open_version

    return set(open_version(ws, dataset).splits)
