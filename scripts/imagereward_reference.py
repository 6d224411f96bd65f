"""Produce tests/fixtures/imagereward_reference.json with the reference ImageReward package.

Runs ONLY in a throwaway venv (the reference does not install beside fkdiff's own dependencies):

    python3 -m venv /tmp/irvenv
    /tmp/irvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/irvenv/bin/pip install "transformers<5" timm==0.6.13 fairscale==0.4.13 "huggingface-hub<1"
    # imported by the package (its ReFL training module):
    /tmp/irvenv/bin/pip install "huggingface-hub<1" "accelerate<1.11" "datasets<4" "diffusers<0.36"
    /tmp/irvenv/bin/pip install --no-deps image-reward==1.5
    /tmp/irvenv/bin/python scripts/imagereward_reference.py

Shims applied here, before importing the package: an empty ``clip`` module (imported, undeclared and unused
by the ImageReward score); three helpers that med.py imports from ``transformers.modeling_utils`` put back
there from ``transformers.pytorch_utils``, where transformers 4.x moved them; and the tokenizer factory
replaced by a BertTokenizer on the small shared vocabulary (the hub's bert-base-uncased is not reachable
offline). The weights come from ``tests/imagereward_seeded.py``: the reference model's own {name: shape}
list, in state_dict order, plus a seed. The model is the reference ``ImageReward`` class as published
(ViT-L/16 + BERT-base + MLP head).
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from imagereward_seeded import FIXTURE, MED_CONFIG, PROMPTS, SEED, seeded_images, seeded_weights, write_vocab  # noqa: E402


def main():
    sys.modules.setdefault("clip", types.ModuleType("clip"))
    import transformers
    import transformers.modeling_utils
    import transformers.pytorch_utils

    for helper in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer"):
        if not hasattr(transformers.modeling_utils, helper):  # moved to pytorch_utils in transformers 4.x
            setattr(transformers.modeling_utils, helper, getattr(transformers.pytorch_utils, helper))
    from PIL import Image

    tmp = Path(tempfile.mkdtemp())
    vocab = write_vocab(tmp)
    (tmp / "med_config.json").write_text(json.dumps(MED_CONFIG))

    def local_tokenizer():  # same steps as the reference's init_tokenizer, on the local vocabulary
        tok = transformers.BertTokenizer(str(vocab))
        tok.add_special_tokens({"bos_token": "[DEC]"})
        tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        tok.enc_token_id = tok.additional_special_tokens_ids[0]
        return tok

    import ImageReward.models.BLIP.blip_pretrain as blip_pretrain
    from ImageReward.ImageReward import ImageReward

    blip_pretrain.init_tokenizer = local_tokenizer
    model = ImageReward(med_config=str(tmp / "med_config.json"), device="cpu").eval()
    spec = [
        [k, list(v.shape)]
        for k, v in model.state_dict().items()
        if v.is_floating_point() and not k.endswith("position_ids")
    ]
    missing, unexpected = model.load_state_dict(seeded_weights(spec, SEED), strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)

    images = seeded_images()
    scores, input_ids = [], []
    with torch.no_grad():
        for img, prompt in zip(images, PROMPTS):
            pil = Image.fromarray((img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
            scores.append(model.score(prompt, pil))
            ids = model.blip.tokenizer(prompt, padding="max_length", truncation=True, max_length=35)["input_ids"]
            input_ids.append(ids)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(
        json.dumps(
            {
                "reference": f"image-reward 1.5, transformers {transformers.__version__}, torch {torch.__version__}",
                "seed": SEED,
                "prompts": PROMPTS,
                "input_ids": input_ids,
                "scores": scores,
                "spec": spec,
            }
        )
    )
    print(f"wrote {FIXTURE}: scores {scores}")


if __name__ == "__main__":
    main()
