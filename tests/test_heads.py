"""The linear heads (task-heads, growing) and the prototypes head; the statistics heads are in
test_statistics_heads.py."""

import numpy as np
import torch

from retain.data.stream import Split, Task
from retain.methods.heads import LinearHeads, Prototypes


def _task(index, classes):
    empty = Split([], np.zeros(0, int))
    return Task(index, classes, empty, empty)


def test_task_heads_train_only_the_current_head_with_local_labels():
    torch.manual_seed(0)
    head = LinearHeads(4, 4, per_task=True)
    head.begin_task(_task(0, [0, 1]))
    head.begin_task(_task(1, [2, 3]))
    f = torch.randn(5, 4)
    logits = head.logits(f)
    assert logits.shape == (5, 4) and torch.isfinite(logits).all()
    head.loss(f, torch.tensor([2, 3, 2, 3, 2])).backward()
    assert head.blocks[0].weight.grad is None and not head.blocks[0].weight.requires_grad
    assert head.blocks[1].weight.grad.abs().sum() > 0


def test_growing_head_masks_unseen_classes_and_trains_all_seen():
    torch.manual_seed(0)
    head = LinearHeads(4, 6, per_task=False)
    head.begin_task(_task(0, [0, 1]))
    head.begin_task(_task(1, [2, 3]))
    f = torch.randn(3, 4)
    logits = head.logits(f)
    assert torch.isinf(logits[:, 4:]).all() and torch.isfinite(logits[:, :4]).all()
    head.loss(f, torch.tensor([2, 3, 2])).backward()
    assert head.blocks[0].weight.grad.abs().sum() > 0  # old classes are pushed down
    head.begin_task(_task(2, [2, 3]))  # no new classes: no new block
    assert len(head.blocks) == 2


def test_heads_rebuild_from_state():
    head = LinearHeads(4, 6, per_task=True)
    head.begin_task(_task(0, [0, 1]))
    head.begin_task(_task(1, [2, 3, 4]))
    other = LinearHeads(4, 6, per_task=True)
    other.load_state(head.state())
    other.load_state_dict(head.state_dict())
    f = torch.randn(2, 4)
    assert torch.equal(other.logits(f), head.logits(f))


def test_prototypes_are_class_means_and_running_means_across_domains():
    head = Prototypes(2, 2)
    head.begin_task(_task(0, [0, 1]))
    batch = {"labels": torch.tensor([0, 0, 1]), "x": torch.tensor([[1., 0], [3, 0], [0, 2]])}
    head.end_task(None, lambda: [batch], lambda b: b["x"])
    assert torch.allclose(head.means, torch.tensor([[2., 0], [0, 2]]))
    assert head.classifier is None
    batch2 = {"labels": torch.tensor([0]), "x": torch.tensor([[0., 6]])}
    head.end_task(None, lambda: [batch2], lambda b: b["x"])
    # class 0: (2 * [2, 0] + [0, 6]) / 3
    assert torch.allclose(head.means[0], torch.tensor([4 / 3, 2.0]))
    logits = head.logits(torch.tensor([[0., 1]]))
    assert logits.argmax().item() == 1


def test_prototypes_mask_classes_without_a_mean():
    head = Prototypes(2, 3)
    batch = {"labels": torch.tensor([1]), "x": torch.tensor([[1., 0]])}
    head.end_task(None, lambda: [batch], lambda b: b["x"])
    logits = head.logits(torch.tensor([[1., 0]]))
    assert torch.isinf(logits[0, 0]) and torch.isinf(logits[0, 2]) and logits[0, 1] == 1.0
