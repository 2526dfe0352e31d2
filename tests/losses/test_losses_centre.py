"""Centre: row mapping, masked EMA update against a manual computation."""

from __future__ import annotations

import pytest
import torch

from patchdino.losses.centre import Centre, CentreUpdate


def test_position_rows_for_global_and_local_views() -> None:
    centre = Centre(8, [4, 2], mode="position")
    assert centre.num_rows == 1 + 4 + 2
    positions = torch.tensor([0, 1, 4, 0, 1, 2])
    assert centre.rows(positions[:3], 0).tolist() == [0, 1, 4]
    assert centre.rows(positions[3:], 1).tolist() == [0, 5, 6]
    kinds = torch.tensor([0, 0, 0, 1, 1, 1])
    assert centre.rows(positions, kinds).tolist() == [0, 1, 4, 0, 5, 6]
    with pytest.raises(ValueError, match="kind"):
        centre.rows(positions, 2)


def test_shared_rows() -> None:
    centre = Centre(8, [4, 2], mode="shared")
    assert centre.num_rows == 2
    assert centre.rows(torch.tensor([0, 3, 0, 1]), 1).tolist() == [0, 1, 0, 1]
    assert Centre(8, 0, mode="shared").num_rows == 1
    assert Centre(8, 0, mode="position").num_rows == 1


def test_update_is_a_masked_ema() -> None:
    torch.manual_seed(0)
    centre = Centre(5, 3, mode="position", momentum=0.9).double()
    start = torch.randn(4, 5, dtype=torch.float64)
    centre.centre.copy_(start)
    logits = torch.randn(6, 5, dtype=torch.float64)
    positions = torch.tensor([0, 2, 2, 0, 2, 0])  # row 1 and 3 never occur
    centre.update(logits, positions)
    expected = start.clone()
    for row in (0, 2):
        mean = logits[positions == row].mean(dim=0)
        expected[row] = 0.9 * start[row] + 0.1 * mean
    torch.testing.assert_close(centre.centre, expected)


def test_weighted_update_and_shared_mode() -> None:
    torch.manual_seed(1)
    centre = Centre(3, 4, mode="shared", momentum=0.5).double()
    logits = torch.randn(4, 3, dtype=torch.float64)
    weights = torch.tensor([1.0, 2.0, 0.0, 1.0], dtype=torch.float64)
    centre.update(logits, torch.tensor([1, 2, 0, 4]), weights=weights)
    patch_mean = (logits[0] + 2 * logits[1] + logits[3]) / 4
    torch.testing.assert_close(centre.centre[1], 0.5 * patch_mean)
    torch.testing.assert_close(centre.centre[0], torch.zeros(3, dtype=torch.float64))  # weight 0


def test_forward_gathers_rows_and_checks_arguments() -> None:
    centre = Centre(2, 2)
    centre.centre.copy_(torch.arange(6.0).view(3, 2))
    assert centre(torch.tensor([2, 0])).tolist() == [[4.0, 5.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="mode"):
        Centre(2, 2, mode="token")
    with pytest.raises(ValueError, match="momentum"):
        Centre(2, 2, momentum=1.5)


@pytest.mark.parametrize(
    ("mode", "patches"), [("position", True), ("shared", True), ("shared", False)]
)
def test_centring_in_chunks_equals_one_masked_update(mode: str, patches: bool) -> None:
    """The statistics kept as bottleneck-feature sums give the update of the logits' sums."""
    torch.manual_seed(2)
    centre = Centre(3, [4, 2], mode=mode, momentum=0.5).double()
    centre.centre.normal_()
    start = centre.centre.clone()
    positions = torch.tensor([1, 4, 2, 1, 2, 3]) if patches else torch.zeros(6, dtype=torch.long)
    kinds = torch.tensor([0, 0, 1, 1, 0, 0])
    features, weight = torch.randn(6, 5, dtype=torch.float64), torch.randn(3, 5).double()
    logits = features @ weight.T  # (6, 3)
    centring = centre.centring(positions, kinds, patches)
    centring.prepare(features, weight, 0.1)
    rows = centre.rows(positions, kinds)
    centred = [centring(logits[a:b].clone(), a, b) for a, b in ((0, 2), (2, 5), (5, 6))]
    torch.testing.assert_close(torch.cat(centred), logits - start[rows])
    expected = Centre(3, [4, 2], mode=mode, momentum=0.5).double()
    expected.centre.copy_(start)
    sums, counts = expected.statistics(logits, rows)
    expected.update_from_statistics(sums, counts)
    centre.update_from([centring], weight)
    torch.testing.assert_close(centre.centre, expected.centre)


def test_update_from_adds_the_centrings_of_one_centre() -> None:
    torch.manual_seed(3)
    centre = Centre(3, 2, mode="position", momentum=0.0).double()
    weight = torch.randn(3, 4).double()
    cls = centre.centring(torch.zeros(2, dtype=torch.long), 0, patches=False)
    patch = centre.centring(torch.tensor([1, 2, 2]), 0, patches=True)
    cls_features, patch_features = torch.randn(2, 4).double(), torch.randn(3, 4).double()
    cls.prepare(cls_features, weight, 0.1)
    patch.prepare(patch_features, weight, 0.1)
    centre.update_from([cls, patch], weight)
    cls_logits, patch_logits = cls_features @ weight.T, patch_features @ weight.T
    expected = torch.stack([cls_logits.mean(dim=0), patch_logits[0], patch_logits[1:].mean(dim=0)])
    torch.testing.assert_close(centre.centre, expected)
    with pytest.raises(ValueError, match="all of their centre"):
        Centre(3, 2).update_from([cls], weight)
    unseen = centre.centring(torch.zeros(2, dtype=torch.long), 0, patches=False)
    with pytest.raises(ValueError, match="saw no features"):
        centre.update_from([unseen], weight)


def test_a_deferred_update_moves_the_centre_once_and_only_when_applied() -> None:
    centre = Centre(3, 2, mode="shared", momentum=0.5).double()
    weight = torch.randn(3, 4).double()
    centring = centre.centring(torch.tensor([1, 2]), 0, patches=True)
    centring.prepare(torch.randn(2, 4).double(), weight, 0.1)
    dropped = CentreUpdate([(centre, [centring], weight)])
    kept = CentreUpdate([(centre, [centring], weight)])
    assert dropped.nbytes == 0  # no process group: nothing is reduced
    dropped.discard()
    assert float(centre.centre.abs().sum()) == 0
    kept.apply()
    assert float(centre.centre.abs().sum()) > 0
    with pytest.raises(RuntimeError, match="already applied"):
        kept.apply()
