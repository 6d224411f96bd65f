"""fkdiff's native ImageReward against the reference package (image-reward 1.5).

How the fixture was made (and how to remake it):

1. A throwaway venv for the reference, which cannot live beside fkdiff (it needs transformers < 5,
   timm == 0.6.13 and fairscale; see the commands at the top of ``scripts/imagereward_reference.py``:
   transformers 4.57.6, huggingface-hub < 1, timm 0.6.13, fairscale 0.4.13, accelerate, datasets,
   diffusers < 0.36 because the package imports them, then ``image-reward==1.5`` without its deps).
2. ``scripts/imagereward_reference.py`` shims what fails there (an empty ``clip`` module; three helpers
   med.py imports from their old place in transformers; the bert-base-uncased tokenizer replaced by a
   BertTokenizer on the small vocabulary in ``tests/imagereward_seeded.py``), builds the reference
   ``ImageReward`` model as published (ViT-L/16, BERT-base with cross-attention, MLP head), records its
   {parameter name: shape} list, loads weights drawn from that list and a seed
   (``imagereward_seeded.seeded_weights``), and scores four seeded 224×224 images (8-bit values, so the
   reference's PIL path sees exactly the same pixels) with four prompts.
3. It writes ``tests/fixtures/imagereward_reference.json``: the spec, the seed, the token ids and the
   scores. Nothing else is committed; no weights.

Here the same weights are regenerated from the spec and seed in the reference's own names, converted by
fkdiff's key-mapping loader (the one used for the real ``ImageReward.pt``) and scored; they must match
within 1e-4.
"""

from __future__ import annotations

import json

import pytest
import torch

from fkdiff.rewards.imagereward import (
    ImageReward,
    ImageRewardModel,
    convert_imagereward_state_dict,
)

from .imagereward_seeded import FIXTURE, MED_CONFIG, PROMPTS, seeded_images, seeded_weights, write_vocab

TOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizer

    return BertTokenizer(vocab=str(write_vocab(tmp_path_factory.mktemp("vocab"))))


@pytest.fixture(scope="module")
def reference_state(reference):
    return seeded_weights(reference["spec"], reference["seed"])


@pytest.fixture(scope="module")
def fk_reward(reference_state, tokenizer):
    return ImageReward(ImageRewardModel.from_state_dict(reference_state, MED_CONFIG), tokenizer, batch_size=2)


def test_tokens_match_the_reference(reference, tokenizer):
    ids = tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=ImageReward.max_length)["input_ids"]
    assert ids == reference["input_ids"]


def test_scores_match_the_reference_package(reference, fk_reward):
    assert max(reference["scores"]) - min(reference["scores"]) > 0.1  # the check can tell images apart
    with torch.no_grad():
        got = fk_reward(seeded_images(), PROMPTS)
    want = torch.tensor(reference["scores"])
    assert got.shape == (len(PROMPTS),)
    assert torch.allclose(got, want, atol=TOL, rtol=0), (got, want)


def test_a_wrong_mapping_is_caught(reference, reference_state, tokenizer):
    """Negative control: swapping the two LayerNorms of one ViT block moves the scores far beyond 1e-4."""
    state = dict(reference_state)
    a, b = "blip.visual_encoder.blocks.3.norm1.weight", "blip.visual_encoder.blocks.3.norm2.weight"
    state[a], state[b] = state[b], state[a]
    model = ImageRewardModel.from_state_dict(state, MED_CONFIG)
    with torch.no_grad():
        got = ImageReward(model, tokenizer)(seeded_images(), PROMPTS)
    assert (got - torch.tensor(reference["scores"])).abs().max() > 10 * TOL


def test_from_pretrained_local_folder_pt_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    from fkdiff.testing import tiny_imagereward_checkpoint

    folder = tiny_imagereward_checkpoint(tmp_path / "ir")
    a = ImageReward.from_pretrained(str(folder), tokenizer=str(folder / "tokenizer"))  # folder, tokenizer path
    state = torch.load(folder / "ImageReward.pt", weights_only=True)
    save_file(state, str(folder / "ir.safetensors"))
    b = ImageReward.from_pretrained(str(folder / "ir.safetensors"), tokenizer=a.tokenizer)  # file, med_config beside
    x = seeded_images(3, size=96)  # also exercises the resize to 224
    with torch.no_grad():
        sa, sb = a(x, PROMPTS[:3]), b(x, PROMPTS[:3])
    assert sa.shape == (3,) and torch.isfinite(sa).all() and torch.equal(sa, sb)
    assert sa.std() > 0  # different images, different scores

    del state["blip.text_encoder.encoder.layer.0.crossattention.self.key.weight"]  # a truncated checkpoint
    torch.save(state, folder / "ImageReward.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        ImageReward.from_pretrained(str(folder), tokenizer=a.tokenizer)


def test_position_ids_survive_the_fast_init(fk_reward):
    ids = fk_reward.model.text.embeddings.position_ids
    assert torch.equal(ids.flatten()[:40], torch.arange(40))


def test_gradients_reach_the_images_and_prompts_are_required(fk_reward):
    x = seeded_images(1, size=64).requires_grad_(True)
    fk_reward(x, PROMPTS[:1]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="prompts"):
        fk_reward(x.detach(), None)


def test_not_an_imagereward_checkpoint_and_offline_errors(tmp_path):
    with pytest.raises(ValueError, match="unexpected parameters"):
        convert_imagereward_state_dict({"model.visual.proj": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected parameters"):
        convert_imagereward_state_dict({"blip.visual_encoder.blocks.0.attn.rel_pos": torch.zeros(1)})
    unused = {
        "blip.vision_proj.weight": torch.zeros(1),
        "blip.itm_head.bias": torch.zeros(1),
        "blip.temp": torch.ones(1),
    }
    assert convert_imagereward_state_dict(unused) == {}
    with pytest.raises(FileNotFoundError, match=r"ImageReward\.pt.*THUDM/ImageReward|THUDM/ImageReward.*local"):
        ImageReward.from_pretrained("THUDM/ImageReward")
    (tmp_path / "ImageReward.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="med_config"):
        ImageReward.from_pretrained(str(tmp_path / "ImageReward.pt"))


def test_bfloat16_model_takes_float32_images(tmp_path):
    from fkdiff.testing import tiny_imagereward_checkpoint

    folder = tiny_imagereward_checkpoint(tmp_path / "ir")
    ref = ImageReward.from_pretrained(str(folder))
    half = ImageReward.from_pretrained(str(folder), dtype=torch.bfloat16)
    x = seeded_images(2, size=64)
    with torch.no_grad():
        want, got = ref(x, PROMPTS[:2]), half(x, PROMPTS[:2])
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)


def test_name_mapping_round_trips(reference):
    """Every parameter of the published layout maps onto ImageRewardModel and back to the same name."""
    from fkdiff.rewards.imagereward import to_reference_state_dict

    names = {name: torch.zeros(1) for name, _ in reference["spec"]}
    ours = convert_imagereward_state_dict(names)
    kept = {n for n in names if not n.startswith(("blip.vision_proj.", "blip.text_proj."))}
    assert set(to_reference_state_dict(ours)) == kept
    assert "vision.encoder.layers.23.self_attn.projection.weight" in ours and "head.4.bias" in ours
    with pytest.raises(ValueError, match="not an ImageRewardModel parameter"):
        to_reference_state_dict({"vision.extra.weight": torch.zeros(1)})
