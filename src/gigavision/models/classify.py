"""``classify``: binary, multi-class (softmax) and multi-label (sigmoid) image or patch classification.

Labels are image-level tags. On patches of big images whose schema has shape classes, a patch's labels are
the classes of the shapes inside it, and single-label training adds a ``background`` class for patches with
none (with tags only, a patch takes its image's tags). Imbalance: inverse
frequency class weights and/or focal loss; optional center loss pulls each class's embeddings together.
Multi-label thresholds are tuned per class on the validation split (best F1) and saved with the model.
The network, targets and losses are the torch half, ``models/nets/classify.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.models.task import BACKGROUND, Evaluation, Task

if TYPE_CHECKING:
    from gigavision.models.recipe import Recipe


class ClassifyTask(Task):
    name = "classify"
    default_arch = "resnet18"
    nets_class = "gigavision.models.nets.classify:ClassifyNets"
    supports_side = True

    def __init__(self, recipe: Recipe, classes: Sequence[str]) -> None:
        super().__init__(recipe, classes)
        self.multi_label = recipe.multi_label
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.thresholds = np.full(len(self.classes), 0.5)
        if not self.multi_label and len(self.classes) < 2:
            raise InvalidInput(
                f"classify needs at least two classes, the dataset has {self.classes}; add a class"
                " (or use multi_label for a single present/absent tag)"
            )

    @classmethod
    def label_map(cls, schema: Sequence[dict[str, Any]], recipe: Recipe) -> list[str]:
        tags = [c["name"] for c in schema if c.get("kind") == "tag"]
        shapes = [c["name"] for c in schema if c.get("kind") != "tag"]
        if shapes and (recipe.patch is not None or not tags):
            # patches (or a schema of shapes only): a sample's classes are the shapes inside it
            if not recipe.multi_label and BACKGROUND not in shapes:
                shapes = [BACKGROUND, *shapes]
            return shapes
        return tags

    def output_names(self) -> list[str]:
        return ["probabilities"]

    # -- inference -------------------------------------------------------------------------------------------
    def decode(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[Annotations]:
        probs = np.asarray(outputs[0], dtype=np.float64)
        out = []
        for row in probs:
            scores = {c: round(float(p), 6) for c, p in zip(self.classes, row, strict=True)}
            if self.multi_label:
                keep = np.nonzero(row >= self.thresholds)[0]
                labels = [self.classes[i] for i in keep]
                score = row[keep]
            else:
                best = int(np.argmax(row))
                labels, score = [self.classes[best]], row[[best]]
            attrs = [{"scores": scores}] * len(labels)
            out.append(Annotations.from_tags(labels, score=score, attributes=attrs, source=["model"] * len(labels)))
        return out

    def _scores(self, predictions: Sequence[Annotations]) -> np.ndarray:
        rows = []
        for p in predictions:
            scores = p.attributes[0]["scores"] if len(p) else None
            rows.append([scores[c] for c in self.classes] if scores else [0.0] * len(self.classes))
        return np.asarray(rows, dtype=np.float64).reshape(len(predictions), len(self.classes))

    def _truth(self, truths: Sequence[Annotations]) -> np.ndarray:
        hot = np.zeros((len(truths), len(self.classes)), dtype=np.int64)
        for i, t in enumerate(truths):
            for lab in t.label:
                if lab in self.index:
                    hot[i, self.index[lab]] = 1
            if not self.multi_label and not hot[i].any() and BACKGROUND in self.index:
                hot[i, self.index[BACKGROUND]] = 1
        return hot

    # -- evaluation ------------------------------------------------------------------------------------------
    def calibrate(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> None:
        if self.multi_label and truths:
            from gigavision.metrics.classification import tune_thresholds

            self.thresholds = np.asarray(
                tune_thresholds(self._truth(truths), self._scores(predictions), self.classes), dtype=np.float64
            )

    def state(self) -> dict[str, Any]:
        return {"thresholds": [float(t) for t in self.thresholds]} if self.multi_label else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if "thresholds" in state:
            self.thresholds = np.asarray(state["thresholds"], dtype=np.float64)

    def evaluate(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> Evaluation:
        from gigavision.metrics.classification import evaluate_classification, evaluate_multilabel

        scores = self._scores(predictions)
        truth = self._truth(truths)
        if self.multi_label:
            ml = evaluate_multilabel(truth, scores, labels=self.classes, thresholds=self.thresholds)
            metrics = {
                "micro_f1": ml.micro.f1,
                "macro_f1": ml.macro.f1,
                "micro_precision": ml.micro.precision,
                "micro_recall": ml.micro.recall,
                "thresholds": ml.thresholds,
                "n_samples": ml.n_samples,
            }
            return Evaluation(metrics, "micro_f1", ml)
        labelled = truth.any(axis=1)
        y = [self.classes[int(i)] for i in truth[labelled].argmax(1)]
        result = evaluate_classification(y, scores=scores[labelled], labels=self.classes)
        metrics = {
            "accuracy": result.accuracy,
            "balanced_accuracy": result.balanced_accuracy,
            "macro_f1": result.macro.f1,
            "roc_auc": result.roc_auc,
            "n_samples": result.n_samples,
        }
        if result.operating_point is not None:
            op = result.operating_point
            metrics["sensitivity"] = op.sensitivity
            metrics["specificity"] = op.specificity
        # balanced accuracy ranks epochs and models: plain accuracy rewards "always background" on patch grids
        return Evaluation(metrics, "balanced_accuracy", result)

    def errors(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> np.ndarray:
        """1 − the score given to the true class(es): confidently wrong first."""
        truth, scores = self._truth(truths), self._scores(predictions)
        worst: np.ndarray = (
            np.abs(truth - scores).max(axis=1) if self.multi_label else 1.0 - (scores * truth).sum(axis=1)
        )
        return worst

    def describe(self, truth: Annotations, prediction: Annotations) -> str:
        t = ", ".join(sorted(str(v) for v in truth.label)) or BACKGROUND
        p = ", ".join(f"{lab} {s:.2f}" for lab, s in zip(prediction.label, prediction.score, strict=True)) or "none"
        return f"truth {t} / predicted {p}"
