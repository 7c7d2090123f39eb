"""Matrix NMS and mask NMS properties not covered by the reference test vectors."""
import torch

from sotr.modeling.matrix_nms import mask_nms, matrix_nms, point_nms


def _masks():
    masks = torch.zeros((3, 8, 8), dtype=torch.bool)
    masks[0, :4, :4] = True
    masks[1, :4, :4] = True  # identical to mask 0
    masks[2, 4:, 4:] = True
    return masks


def test_identical_same_class_masks_do_not_divide_by_zero():
    masks = _masks()
    masks = torch.cat([masks, masks[:2]])  # a second identical pair: compensate == 1 for the linear kernel
    labels = torch.tensor([0, 0, 0, 0, 0])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    for kernel in ("gaussian", "linear"):
        out = matrix_nms(labels, masks, masks.sum((1, 2)).float(), scores, kernel=kernel)
        assert torch.isfinite(out).all()
        assert out[0] == scores[0] and out[1] < 0.2 * scores[1]  # exp(-2) = 0.135 (Gaussian), 0 (linear)
        assert out[2] == scores[2]  # disjoint mask: not decayed


def test_matrix_nms_ignores_other_classes_and_empty_input():
    masks = _masks()
    scores = torch.tensor([0.9, 0.8, 0.7])
    out = matrix_nms(torch.tensor([0, 1, 0]), masks, masks.sum((1, 2)).float(), scores)
    torch.testing.assert_close(out, scores)
    assert matrix_nms(torch.zeros(0, dtype=torch.long), masks[:0], torch.zeros(0), torch.zeros(0)).shape == (0,)


def test_mask_nms_drops_same_class_overlaps():
    masks = _masks()
    keep = mask_nms(torch.tensor([0, 0, 0]), masks, masks.sum((1, 2)).float(), torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [True, False, True]
    keep = mask_nms(torch.tensor([0, 1, 0]), masks, masks.sum((1, 2)).float(), torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [True, True, True]


def test_point_nms_keeps_ties_and_first_row_column_against_padding():
    heat = torch.tensor([[[[0.5, 0.5], [0.1, 0.6]]]])
    torch.testing.assert_close(point_nms(heat), torch.tensor([[[[0.5, 0.5], [0.0, 0.6]]]]))
