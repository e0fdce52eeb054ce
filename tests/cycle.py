"""The whole cycle of issue 14 over REST, shared by ``tests/test_cycle.py`` and ``benchmarks/bench_cycle.py``.

Seed labels (a few per digit of scikit-learn's digits, 16 px) -> a loop's first round trains a classifier and
serves it as ``production`` -> a routing policy (normalised entropy above ``threshold``: review; a share
``audit_share`` of the confident ones reviewed too) -> a stream of images predicted with ``store`` over
``POST /api/v1/predict`` -> a scripted expert answers every open task from the truth (accept a right proposal,
correct a wrong one) -> the loop's next round freezes people's labels, trains, compares on the same test split
(paired bootstrap) and promotes or keeps -> once per stream. Measured: production accuracy on a fixed held-out
set (never in a dataset) after each round, and per round the audit's estimate of the auto-accept error rate
next to the true rate (every confident prediction checked against the truth).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

import gigavision as gv
from tests.realdata import digit_images, ingest_tagged

# test_resnet at 16 px: about 1 s of CPU per training on a few hundred digits (tests/test_loop.py)
RECIPE: dict[str, Any] = {
    "task": "classify",
    "arch": "test_resnet",
    "image_size": 16,
    "batch_size": 32,
    "lr": 1e-2,
    "augment.hflip": False,
}
SPLIT = "train=0.5,val=0.1,test=0.4"  # a big test split: the loop's paired comparison has the power to decide
LOOP = "cycle"
EVERY = 20  # new labels that make the loop due: far fewer than any stream's answers


@dataclass(frozen=True)
class Config:
    """One simulated deployment: how much is labelled up front, what streams in, how it is routed."""

    seed_per_class: int = 4
    streams: tuple[int, ...] = (150, 300)  # images predicted before each retraining round
    held_out: int = 150
    epochs: int = 10
    threshold: float = 0.8  # normalised entropy above which a prediction is reviewed
    audit_share: float = 0.9
    order: int = 0  # the data order: which digits are seeds, streams and held out
    train_seed: int = 0
    expert: str = "eve"


@dataclass
class Round:
    """One stream under the served model, the expert's answers and the loop round after them."""

    stream: int
    served: str  # the model behind production while the stream was predicted
    tasks: dict[str, int]  # open review tasks by reason after the stream was predicted
    uncertain_predictions: int  # stored predictions above the threshold (each should be a task)
    answers: dict[str, int]
    new_labels: int  # what the loop counted as new since the served model's version when the round started
    labels: dict[str, int]  # the expert's stored labels: made, source user:NAME, linked to the prediction, right
    confident: int
    audit: dict[str, Any]
    true_rate: float | None
    decision: str  # the loop's: promoted or kept
    candidate: str
    comparison: str
    accuracy: float = float("nan")  # production's held-out accuracy after the round


@dataclass
class Result:
    config: Config
    accuracy: list[float]  # held-out accuracy of production after each round (the first model's first)
    rounds: list[Round] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU time per phase (children's included)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_seconds() -> float:
    """CPU time of this process and its children, ended ones included (a job's child process ends before its
    fork server): what a phase costs on an idle machine, less sensitive to a shared one than wall time."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + (t.children_user + t.children_system if p is not me else 0.0)
    return total


class _Clock:
    """Wall and CPU seconds per phase, summed over its passes."""

    def __init__(self, wall: dict[str, float], cpu: dict[str, float]) -> None:
        self.wall, self.cpu = wall, cpu

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), cpu_seconds()
        try:
            yield
        finally:
            self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - t0
            self.cpu[phase] = self.cpu.get(phase, 0.0) + cpu_seconds() - c0


def _ok(r: Any, status: int = 200) -> dict[str, Any]:
    if r.status_code != status:
        raise AssertionError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}")
    return dict(r.json())


def _ingest(ws: gv.Workspace, folder: Path, images: np.ndarray) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(images):
        paths.append(folder / f"{folder.name}-{i:05d}.png")
        Image.fromarray(arr).save(paths[-1])
    results = ws.ingest(paths)
    assert all(r.status == "added" and r.id for r in results), [r for r in results if r.status != "added"]
    return [str(r.id) for r in results]


def _predict(api: TestClient, image_id: str, *, store: bool) -> dict[str, Any]:
    return _ok(api.post("/api/v1/predict", json={"model": "production", "image_id": image_id, "store": store}))


def _accuracy(api: TestClient, ids: list[str], truth: dict[str, str]) -> float:
    right = 0
    for image_id in ids:
        tags = [a for a in _predict(api, image_id, store=False)["annotations"] if a["kind"] == "tag"]
        right += max(tags, key=lambda a: a["score"])["label"] == truth[image_id]
    return right / len(ids)


def _round(api: TestClient, ws: gv.Workspace, *, force: bool = False) -> dict[str, Any]:
    queued = _ok(api.post(f"/api/v1/loops/{LOOP}/run", json={"force": force}), 202)
    job = ws.jobs.wait(queued["id"], timeout=1800)
    assert job["status"] == "done", f"loop job {job['status']}: {job['error']}"
    return dict(job["result"])


def _expert(api: TestClient, truth: dict[str, str], name: str) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Answer every open task from the truth, highest priority first: accept a right proposal, correct a wrong
    one. Returns the counts and the answered tasks. (One listing of the queue instead of ``/reviews/next``
    before each answer: the same tasks in the same order, half the requests.)"""
    answered: Counter[str] = Counter()
    tasks = []
    while items := _ok(api.get("/api/v1/reviews", params={"limit": 1000}))["items"]:
        for task in items:
            right = truth[task["image_id"]]
            body: dict[str, Any] = {"version": task["version"], "actor": name, "decision": "accept"}
            if task["label"] != right:
                body |= {"decision": "correct", "annotation": {"kind": "tag", "label": right}}
            tasks.append(_ok(api.post(f"/api/v1/reviews/{task['id']}/answer", json=body)))
            answered[body["decision"]] += 1
    return {"accept": answered["accept"], "correct": answered["correct"]}, tasks


def _labels(ws: gv.Workspace, tasks: list[dict[str, Any]], truth: dict[str, str], name: str) -> dict[str, int]:
    """How the expert's answers were stored: one label per task, ``user:NAME``, linked to the task's prediction."""
    out = Counter[str]()
    for task in tasks:
        out["answered"] += 1
        if task["result_annotation_id"] is None:
            continue
        label = ws.annotations.get_record(int(task["result_annotation_id"]))
        attributes = label["attributes"] or {}
        out["stored"] += 1
        out["by_user"] += label["source"] == f"user:{name}" and label["status"] == "accepted"
        out["linked"] += (
            attributes.get("prediction") == task["annotation_id"] and attributes.get("review_task") == task["id"]
        )
        out["right"] += label["label"] == truth[task["image_id"]]
    return {k: out[k] for k in ("answered", "stored", "by_user", "linked", "right")}


def _split(config: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """The digits (each bitmap once: ingest keeps one copy per content) cut into seeds, streams and held out."""
    images, labels = digit_images(scale=2)
    first = {}
    for i, im in enumerate(images):
        first.setdefault(im.tobytes(), i)
    unique = np.array(sorted(first.values()))
    order = unique[np.random.default_rng(config.order).permutation(len(unique))]
    seed = np.concatenate([order[labels[order] == d][: config.seed_per_class] for d in range(10)])
    rest = order[~np.isin(order, seed)]
    cuts = np.cumsum([0, *config.streams])
    if cuts[-1] + config.held_out > len(rest):
        raise ValueError(f"{len(rest)} digits left after the seeds: streams and held-out set ask for more")
    streams = [rest[a:b] for a, b in itertools.pairwise(cuts)]
    return images, labels, seed, streams, rest[cuts[-1] : cuts[-1] + config.held_out]


def run_cycle(root: Path, config: Config = Config()) -> Result:
    """The whole cycle in a new workspace under ``root`` (see the module's docstring)."""
    from gigavision.server.main import create_app

    images, labels, seed, streams, held = _split(config)
    result = Result(config, [])
    clock = _Clock(result.seconds, result.cpu_seconds)
    ws = _workspace(root / "ws")
    try:
        with clock("ingest"):
            seeds = [[str(v)] for v in labels[seed]]
            ingest_tagged(ws, root / "seed", list(images[seed]), seeds, "digits", split=SPLIT)
            stream_ids = [_ingest(ws, root / f"stream{k}", images[s]) for k, s in enumerate(streams)]
            held_ids = _ingest(ws, root / "held", images[held])
        truth = dict(zip(held_ids, map(str, labels[held]), strict=True))
        for ids, s in zip(stream_ids, streams, strict=True):
            truth |= dict(zip(ids, map(str, labels[s]), strict=True))
        recipe = {**RECIPE, "epochs": config.epochs, "seed": config.train_seed}
        with TestClient(create_app(ws), base_url="http://127.0.0.1") as api:
            body = {"name": LOOP, "dataset": "digits", "recipe": recipe, "every": EVERY}
            _ok(api.post("/api/v1/loops", json=body), 201)
            with clock("rounds"):
                served = _round(api, ws, force=True)["candidate"]
            policy = {"threshold": config.threshold, "audit_share": config.audit_share}
            _ok(api.put("/api/v1/routing/production", json=policy))
            with clock("held-out"):
                result.accuracy.append(_accuracy(api, held_ids, truth))
            for ids in stream_ids:
                done = _stream_round(api, ws, ids, truth, served, config, clock)
                if done.decision == "promoted":
                    served = done.candidate
                with clock("held-out"):
                    result.accuracy.append(_accuracy(api, held_ids, truth))
                done.accuracy = result.accuracy[-1]
                result.rounds.append(done)
    finally:
        ws.close()
    return result


def _stream_round(
    api: TestClient,
    ws: gv.Workspace,
    ids: list[str],
    truth: dict[str, str],
    served: str,
    config: Config,
    clock: _Clock,
) -> Round:
    """Predict and store a stream with the served model, let the expert answer the tasks it made, run the
    loop's next round; its held-out accuracy is filled in by the caller."""
    with clock("stream"):
        for image_id in ids:
            _predict(api, image_id, store=True)
    tasks = _ok(api.get("/api/v1/reviews/counts"))["by_reason"]
    with clock("expert"):
        answers, answered = _expert(api, truth, config.expert)
    audit = _ok(api.get(f"/api/v1/models/{served}/monitor"))["audit"]
    with clock("checks"):
        # the truth of what the policy let through: every stored prediction at or under the threshold
        mine = [
            (r, truth[image_id])
            for image_id in ids
            for r in ws.annotations.query_records(image_id, sources=[f"model:{served}"])
        ]
        confident = [r["label"] != right for r, right in mine if _uncertainty(r) <= config.threshold]
        labels = _labels(ws, answered, truth, config.expert)
    due = _ok(api.get(f"/api/v1/loops/{LOOP}"))["state"]
    with clock("rounds"):
        record = _round(api, ws)
    return Round(
        stream=len(ids),
        served=served,
        tasks=dict(tasks),
        uncertain_predictions=sum(_uncertainty(r) > config.threshold for r, _ in mine),
        answers=answers,
        new_labels=int(due["new_labels"]),
        labels=labels,
        confident=len(confident),
        audit=audit,
        true_rate=float(np.mean(confident)) if confident else None,
        decision=str(record["status"]),
        candidate=str(record["candidate"]),
        comparison=str(record["message"]),
    )


def _workspace(path: Path) -> gv.Workspace:
    """A new workspace whose job consumer never starts loop rounds on its own (``[loops] check_seconds = 0``):
    an automatic round could start while the expert is half-way through a stream and train on part of the
    answers. Rounds start here over REST, each once the expert is done, as ``POST /loops/{name}/run`` does."""
    key, before = "GIGAVISION_LOOPS__CHECK_SECONDS", os.environ.get("GIGAVISION_LOOPS__CHECK_SECONDS")
    os.environ[key] = "0"
    try:
        return gv.init_workspace(path)
    finally:
        if before is None:
            del os.environ[key]
        else:
            os.environ[key] = before


def _uncertainty(record: dict[str, Any]) -> float:
    return float((record["attributes"] or {}).get("uncertainty", 1.0))
