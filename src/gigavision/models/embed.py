"""``embed``: metric learning for visual search and verification.

A timm backbone and a linear projection to ``recipe.embedding_dim``, L2-normalised, trained with the
batch-hard triplet loss (Hermans et al. 2017): for every anchor of a batch, its farthest same-class sample and
its nearest other-class sample, pushed ``recipe.margin`` apart. Labels are image-level tags as in ``classify``
(one per sample; samples with none or several are left out). Training batches are P×K: runs of
``samples_per_class`` images of one class in a shuffled order (``train.data.EpochShuffle``), so every batch
holds positives however many classes there are (instance discrimination: one class per picture).

Outputs: one ``tag`` per image whose ``attributes["embedding"]`` is the vector. After training the class
prototypes (mean validation embedding per class) are saved with the model, so the tag's label is the nearest
prototype's class and its score the cosine similarity; without prototypes (no validation split, or during
training) the label is ``embedding`` and the score NaN. Scores: retrieval recall@1/@5 (every sample a query
against the rest of the split) and the verification ROC of "same class?" by cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.models.task import Evaluation, Task

if TYPE_CHECKING:
    from gigavision.models.recipe import Recipe

UNLABELLED = "embedding"  # the decoded tag's label when the model has no class prototypes
MAX_VERIFICATION_PAIRS = 2_000_000  # past this, the ROC uses a fixed random sample of pairs


class EmbedTask(Task):
    name = "embed"
    default_arch = "resnet18"
    nets_class = "gigavision.models.nets.embed:EmbedNets"
    samples_per_class = 4  # training batches are runs of 4 images of a class (P×K: positives in every batch)

    def __init__(self, recipe: Recipe, classes: Sequence[str]) -> None:
        super().__init__(recipe, classes)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.prototypes: np.ndarray | None = None  # (classes, D) unit vectors; rows of absent classes are 0
        self._nearest: dict[int, tuple[str, float]] = {}  # id(prediction) -> nearest other sample, for describe
        if len(self.classes) < 2:
            raise InvalidInput(f"embed needs at least two classes to tell apart, the dataset has {self.classes}")

    @classmethod
    def label_map(cls, schema: Sequence[dict[str, Any]], recipe: Recipe) -> list[str]:
        tags = [c["name"] for c in schema if c.get("kind") == "tag"]
        if recipe.patch is not None or not tags:
            return [c["name"] for c in schema if c.get("kind") != "tag"]
        return tags

    def output_names(self) -> list[str]:
        return ["embeddings"]

    # -- data ------------------------------------------------------------------------------------------------
    def label_of(self, annotations: Annotations) -> int | None:
        present = {self.index[lab] for lab in annotations.label if lab in self.index}
        return present.pop() if len(present) == 1 else None

    # -- inference -------------------------------------------------------------------------------------------
    def decode(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[Annotations]:
        emb = np.asarray(outputs[0], dtype=np.float64)
        out = []
        for row in emb:
            label, score = UNLABELLED, float("nan")
            if self.prototypes is not None:
                sims = self.prototypes @ row
                best = int(np.argmax(sims))
                label, score = self.classes[best], float(sims[best])
            attrs = [{"embedding": [round(float(v), 6) for v in row]}]
            out.append(Annotations.from_tags([label], score=np.array([score]), attributes=attrs, source=["model"]))
        return out

    def _collect(
        self, truths: Sequence[Annotations], predictions: Sequence[Annotations]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(embeddings, class indices, positions in the inputs) of the samples with one known class."""
        rows, labels, where = [], [], []
        for i, (t, p) in enumerate(zip(truths, predictions, strict=True)):
            label = self.label_of(t)
            if label is None or not len(p) or "embedding" not in p.attributes[0]:
                continue
            rows.append(p.attributes[0]["embedding"])
            labels.append(label)
            where.append(i)
        dim = self.recipe.embedding_dim
        emb = np.asarray(rows, dtype=np.float64).reshape(len(rows), dim if not rows else len(rows[0]))
        return emb, np.asarray(labels, dtype=np.int64), np.asarray(where, dtype=np.int64)

    # -- evaluation ------------------------------------------------------------------------------------------
    def calibrate(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> None:
        """Class prototypes from the validation embeddings: what ``decode`` labels images with."""
        emb, labels, _ = self._collect(truths, predictions)
        if not len(emb):
            return
        protos = np.zeros((len(self.classes), emb.shape[1]))
        np.add.at(protos, labels, emb)
        norm = np.linalg.norm(protos, axis=1, keepdims=True)
        self.prototypes = np.divide(protos, norm, out=np.zeros_like(protos), where=norm > 0)

    def state(self) -> dict[str, Any]:
        if self.prototypes is None:
            return {}
        return {"prototypes": [[round(float(v), 6) for v in row] for row in self.prototypes]}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("prototypes"):
            self.prototypes = np.asarray(state["prototypes"], dtype=np.float64)

    def evaluate(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> Evaluation:
        from gigavision.metrics.embedding import recall_at_k, verification_roc

        emb, labels, _ = self._collect(truths, predictions)
        if len(emb) < 2:
            metrics: dict[str, Any] = {"recall_at_1": None, "recall_at_5": None, "n_samples": len(emb)}
            return Evaluation(metrics, "recall_at_1", dict(metrics))
        retrieval = recall_at_k(emb, labels.tolist(), ks=(1, 5))
        n = len(emb)
        pairs = None
        if n * (n - 1) // 2 > MAX_VERIFICATION_PAIRS:  # a fixed sample keeps the ROC's memory bounded
            rng = np.random.default_rng(0)
            i, j = rng.integers(0, n, (2, MAX_VERIFICATION_PAIRS))
            pairs = np.stack([i[i != j], j[i != j]], axis=1)
        roc = verification_roc(emb, labels.tolist(), pairs=pairs)
        metrics = {
            "recall_at_1": retrieval.recall_at_k[1],
            "recall_at_5": retrieval.recall_at_k[5],
            "verification_auc": roc.auc,
            **{f"tar_at_far_{f:g}": v for f, v in roc.tar_at_far.items()},
            "n_samples": n,
        }
        if self.prototypes is not None:
            metrics["prototype_accuracy"] = float(((emb @ self.prototypes.T).argmax(1) == labels).mean())
        result = {**metrics, "recall_at_k": retrieval.recall_at_k, "roc": roc.roc, "n_queries": retrieval.n_queries}
        return Evaluation(metrics, "recall_at_1", result)

    def errors(self, truths: Sequence[Annotations], predictions: Sequence[Annotations]) -> np.ndarray | None:
        """Similarity of the nearest other-class sample minus that of the nearest same-class one: retrieval
        failures first (positive), then near misses."""
        emb, labels, where = self._collect(truths, predictions)
        if len(emb) < 2:
            return None
        sim = emb @ emb.T
        np.fill_diagonal(sim, -np.inf)
        same = labels[:, None] == labels[None, :]
        best_same = np.where(same, sim, -np.inf).max(1)
        best_other = np.where(~same, sim, -np.inf).max(1)
        gap = np.where(np.isfinite(best_same) & np.isfinite(best_other), best_other - best_same, -np.inf)
        nearest = sim.argmax(1)
        self._nearest = {
            id(predictions[int(w)]): (self.classes[int(labels[k])], float(sim[i, k]))
            for i, (w, k) in enumerate(zip(where, nearest, strict=True))
        }
        out = np.full(len(truths), -np.inf)
        out[where] = gap
        return out

    def describe(self, truth: Annotations, prediction: Annotations) -> str:
        t = ", ".join(sorted(str(v) for v in truth.label)) or "none"
        near = self._nearest.get(id(prediction))
        return f"truth {t} / nearest neighbour {near[0]} (cosine {near[1]:.2f})" if near else f"truth {t}"
