"""The whole cycle of issue 14, simulated end to end over REST, with its two acceptance figures.

The flow is ``tests/cycle.py`` (one implementation: tests/test_cycle.py asserts on it): seed labels (a few per
digit of scikit-learn's digits, 16 px) -> a loop's first round trains a classifier and serves it as
``production`` -> a routing policy (uncertainty above a threshold: review; an audit share of the confident ones
reviewed too) -> a stream of images predicted with ``store`` over ``POST /api/v1/predict`` -> a scripted expert
answers every task from the truth (accept a right proposal, correct a wrong one) -> the loop's next round
freezes people's labels, trains, compares on the same test split (paired bootstrap) and promotes or keeps ->
once per stream. Reported: production accuracy on a fixed held-out set (never in a dataset) after each round,
each round's decision and comparison, the audit's estimate of the auto-accept error rate next to the true rate
(every confident prediction checked against the truth), and wall and CPU seconds per phase.

Targets (issue 14): accuracy rises over ≥ 2 rounds; audit estimate within 3 points of the true rate.

Usage::

    .venv/bin/python benchmarks/bench_cycle.py [--seed-per-class 4] [--streams 150,300] [--audit-share 0.8]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cycle import RECIPE, SPLIT, Config, run_cycle

import _util as u


def main() -> None:
    d = Config()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-per-class", type=int, default=d.seed_per_class)
    ap.add_argument("--streams", default=",".join(map(str, d.streams)), help="images predicted before each round")
    ap.add_argument("--held-out", type=int, default=d.held_out)
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument(
        "--threshold", type=float, default=d.threshold, help="normalised entropy above which a prediction is reviewed"
    )
    ap.add_argument("--audit-share", type=float, default=d.audit_share)
    ap.add_argument("--order", type=int, default=d.order, help="seed of the data order (seeds, streams, held out)")
    ap.add_argument("--train-seed", type=int, default=d.train_seed)
    args = ap.parse_args()
    config = Config(
        seed_per_class=args.seed_per_class,
        streams=tuple(int(v) for v in args.streams.split(",")),
        held_out=args.held_out,
        epochs=args.epochs,
        threshold=args.threshold,
        audit_share=args.audit_share,
        order=args.order,
        train_seed=args.train_seed,
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=u.BENCH if u.BENCH.exists() else None) as tmp:
        result = run_cycle(Path(tmp), config)
        seconds = time.perf_counter() - t0  # the workspace's removal not counted
    rounds = []
    for k, r in enumerate(result.rounds, 1):
        gap = None if r.true_rate is None or r.audit["error_rate"] is None else r.audit["error_rate"] - r.true_rate
        rounds.append(
            {
                "round": k,
                "stream": r.stream,
                "tasks": r.tasks,
                "answers": r.answers,
                "confident": r.confident,
                "audit": r.audit,
                "true_auto_accept_error_rate": r.true_rate,
                "audit_error_points": None if gap is None else u.rnd(100 * abs(gap), 2),
                "decision": r.decision,
                "comparison": r.comparison,
                "held_out_accuracy": u.rnd(r.accuracy),
            }
        )
        u.log(f"round {k}: {r.comparison}; held-out accuracy {r.accuracy:.3f}; audit {r.audit}")
    accuracy = result.accuracy
    within = [r["audit_error_points"] <= 3 for r in rounds if r["audit_error_points"] is not None]
    u.emit(
        {
            "benchmark": "cycle",
            "claim": "production accuracy rises over the rounds; audit estimate within 3 points of the true rate",
            "config": {**vars(args), "recipe": {**RECIPE, "epochs": args.epochs}, "split": SPLIT},
            "held_out_accuracy": [u.rnd(a) for a in accuracy],
            "rounds": rounds,
            "seconds": u.rnd(seconds, 1),
            "phases": {k: u.rnd(v, 1) for k, v in result.seconds.items()},
            "cpu_seconds": {k: u.rnd(v, 1) for k, v in result.cpu_seconds.items()},
            "met": {
                "accuracy_rises": all(b > a for a, b in itertools.pairwise(accuracy)),
                "promotions": sum(r["decision"] == "promoted" for r in rounds),
                "audit_within_3_points": bool(within) and all(within),
            },
            "machine": u.machine(),
        }
    )


if __name__ == "__main__":
    main()
