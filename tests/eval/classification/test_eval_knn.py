"""k-NN classification against a plainly written per-query loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchdino.eval import knn_classify


def reference_knn(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    k: int,
    temperature: float,
    num_classes: int,
    normalize: bool = True,
    top5: str = "voted",
) -> tuple[np.ndarray, float, float]:
    """One query at a time: similarities to all train samples, sort, weighted vote.

    Top-5 as ``top5`` names it: ``voted`` counts the true class when it got a vote and fewer
    than five classes got more; ``dino`` when it is among the first ``min(5, k)`` classes of
    all classes ordered by votes (ties by the lower index), as DINO's ``knn_classifier``."""
    if normalize:
        train = train / np.linalg.norm(train, axis=1, keepdims=True)
        test = test / np.linalg.norm(test, axis=1, keepdims=True)
    preds, hits1, hits5 = [], 0, 0
    for query, label in zip(test, test_labels):
        sims = np.array([float(np.dot(query, row)) for row in train])
        nearest = np.argsort(-sims)[:k]
        votes = np.zeros(num_classes)
        for j in nearest:
            votes[train_labels[j]] += np.exp(sims[j] / temperature)
        pred = int(np.argmax(votes))
        preds.append(pred)
        hits1 += pred == label
        if top5 == "voted":
            hits5 += votes[label] > 0 and int((votes > votes[label]).sum()) < 5
        else:
            order = sorted(range(num_classes), key=lambda c: (-votes[c], c))
            hits5 += int(label) in order[: min(5, k)]
    num = len(test_labels)
    return np.array(preds), 100.0 * hits1 / num, 100.0 * hits5 / num


def clustered_data(
    num: int, dim: int, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy Gaussian clusters (the same centres for every seed): accuracy well between chance
    and 100%."""
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234))
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (num,), generator=gen)
    feats = centres[labels] + 0.8 * torch.randn(num, dim, generator=gen)
    return feats.double(), labels


@pytest.mark.parametrize(
    ("chunk_size", "memory_chunk_size"),
    [(1024, 65536), (32, 1000), (17, 40), (7, 3)],
)
def test_knn_matches_loop_reference(chunk_size: int, memory_chunk_size: int) -> None:
    train, train_labels = clustered_data(203, 12, 9, seed=0)
    test, test_labels = clustered_data(61, 12, 9, seed=1)
    ks = (1, 5, 10, 20, 50)
    result = knn_classify(
        train.float(),
        train_labels,
        test.float(),
        test_labels,
        ks=ks,
        temperature=0.07,
        num_classes=9,
        chunk_size=chunk_size,
        memory_chunk_size=memory_chunk_size,
    )
    for k in ks:
        preds, top1, top5 = reference_knn(
            train.numpy(), train_labels.numpy(), test.numpy(), test_labels.numpy(), k, 0.07, 9
        )
        np.testing.assert_array_equal(result.predictions[k].numpy(), preds)
        assert result.top1[k] == pytest.approx(top1)
        assert result.top5[k] == pytest.approx(top5)
    assert 20.0 < result.top1[20] < 100.0  # a non-trivial problem


@pytest.mark.parametrize("chunk_size", [1024, 7])
def test_knn_dino_top5_matches_loop_reference(chunk_size: int) -> None:
    train, train_labels = clustered_data(203, 12, 9, seed=8)
    test, test_labels = clustered_data(61, 12, 9, seed=9)
    ks = (1, 2, 3, 5, 10, 50)
    dino = knn_classify(
        train.float(),
        train_labels,
        test.float(),
        test_labels,
        ks=ks,
        num_classes=9,
        chunk_size=chunk_size,
        top5="dino",
    )
    voted = knn_classify(
        train.float(), train_labels, test.float(), test_labels, ks=ks, num_classes=9
    )
    for k in ks:
        _, _, expected = reference_knn(
            train.numpy(),
            train_labels.numpy(),
            test.numpy(),
            test_labels.numpy(),
            k,
            0.07,
            9,
            top5="dino",
        )
        assert dino.top5[k] == pytest.approx(expected)
        assert dino.top1[k] == voted.top1[k]
        # Unvoted classes can only add hits, and not when k leaves no unvoted class in reach.
        assert dino.top5[k] >= voted.top5[k]
    # At k = 1 one class gets a vote: voted top-5 is top-1, DINO's is top-1 too (min(5, k)).
    assert dino.top5[1] == voted.top5[1] == voted.top1[1]
    # At k = 3 DINO's count looks at 3 classes, voted or not: the conventions differ.
    assert dino.top5[3] > voted.top5[3]


def test_knn_unnormalized_dot_product() -> None:
    train, train_labels = clustered_data(90, 6, 4, seed=2)
    test, test_labels = clustered_data(30, 6, 4, seed=3)
    train, test = train * 0.3, test * 0.3
    result = knn_classify(
        train.float(),
        train_labels,
        test.float(),
        test_labels,
        ks=(3, 11),
        temperature=0.5,
        chunk_size=8,
        memory_chunk_size=13,
        normalize=False,
    )
    for k in (3, 11):
        preds, top1, _ = reference_knn(
            train.numpy(),
            train_labels.numpy(),
            test.numpy(),
            test_labels.numpy(),
            k,
            0.5,
            4,
            normalize=False,
        )
        np.testing.assert_array_equal(result.predictions[k].numpy(), preds)
        assert result.top1[k] == pytest.approx(top1)


def test_knn_without_labels_and_inferred_classes() -> None:
    train, train_labels = clustered_data(50, 5, 3, seed=4)
    test, test_labels = clustered_data(20, 5, 3, seed=5)
    with_labels = knn_classify(train.float(), train_labels, test.float(), test_labels, ks=(5,))
    without = knn_classify(train.float(), train_labels, test.float(), ks=(5,))
    assert without.top1 == {} and without.top5 == {}
    assert torch.equal(without.predictions[5], with_labels.predictions[5])
    assert with_labels.predictions[5].dtype == torch.long
    # Three classes: every class that got a vote is within the top 5.
    assert with_labels.top5[5] <= 100.0


def test_knn_identical_query_is_its_own_neighbour() -> None:
    train, train_labels = clustered_data(40, 8, 5, seed=6)
    result = knn_classify(train.float(), train_labels, train.float(), train_labels, ks=(1,))
    assert result.top1[1] == 100.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ks": (0,)}, "every k"),
        ({"ks": (41,)}, "every k"),
        ({"temperature": 0.0}, "temperature"),
        ({"chunk_size": 0}, "chunk sizes"),
        ({"num_classes": 3}, "num_classes"),
        ({"top5": "any"}, "top5 must be one of voted, dino"),
    ],
)
def test_knn_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    train, train_labels = clustered_data(40, 8, 5, seed=7)
    with pytest.raises(ValueError, match=message):
        arguments = {"ks": (5,), **kwargs}
        knn_classify(train.float(), train_labels, train.float(), train_labels, **arguments)  # type: ignore[arg-type]


def test_knn_rejects_bad_shapes() -> None:
    feats = torch.randn(10, 4)
    labels = torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="dims differ"):
        knn_classify(feats, labels, torch.randn(3, 5), ks=(1,))
    with pytest.raises(ValueError, match="train_labels"):
        knn_classify(feats, labels[:9], feats, ks=(1,))
    with pytest.raises(ValueError, match="integer"):
        knn_classify(feats, labels.float(), feats, ks=(1,))
    with pytest.raises(ValueError, match="non-negative"):
        knn_classify(feats, labels - 1, feats, ks=(1,))
