"""Rewards on tiny, locally built models (an open_clip custom config, random weights): contract, order,
gradients, local loading, offline errors, composition."""

import math

import pytest
import torch

from fkdiff.rewards import ClassifierReward, FunctionReward, Normalized, RankEnsemble, WeightedSum

open_clip = pytest.importorskip("open_clip")

TINY = "fkdiff-tiny-clip"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from fkdiff.testing import tiny_open_clip

    return tiny_open_clip(tmp_path_factory.mktemp("clipcfg"), TINY)


def images(n=5, size=40, seed=0):
    return torch.rand(n, 3, size, size + 8, generator=torch.Generator().manual_seed(seed))


def test_clip_score_contract_order_and_gradients(tiny_clip):
    from fkdiff.rewards import CLIPScore

    tok = open_clip.get_tokenizer(TINY)
    r = CLIPScore(tiny_clip, tok, 32, batch_size=2)
    x = images()
    prompts = ["a cat", "a dog", "a tree", "a car", "a house"]
    s = r(x, prompts)
    assert s.shape == (5,) and torch.isfinite(s).all() and s.abs().max() <= 100
    whole = CLIPScore(tiny_clip, tok, 32, batch_size=None)(x, prompts)
    torch.testing.assert_close(s, whole, rtol=1e-4, atol=1e-4)  # chunking keeps the order
    rev = r(x.flip(0), prompts[::-1])
    torch.testing.assert_close(rev, s.flip(0), rtol=1e-4, atol=1e-4)
    xg = x.clone().requires_grad_(True)
    r(xg, prompts).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="prompts"):
        r(x, None)
    with pytest.raises(ValueError, match="5 images but 2 prompts"):
        r(x, ["a", "b"])


def test_clip_score_loads_a_local_checkpoint(tiny_clip, tmp_path):
    from safetensors.torch import save_file

    from fkdiff.rewards import CLIPScore

    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.state_dict().items()}, str(path))
    loaded = CLIPScore.from_pretrained(TINY, pretrained=str(path))
    ref = CLIPScore(tiny_clip, open_clip.get_tokenizer(TINY), 32)
    x = images(3)
    torch.testing.assert_close(loaded(x, ["a", "b", "c"]), ref(x, ["a", "b", "c"]), rtol=1e-5, atol=1e-5)


def test_aesthetic_head_from_local_file_and_offline_error(tiny_clip, tmp_path, monkeypatch):
    from fkdiff.rewards import AestheticScore
    from fkdiff.rewards.clip import AestheticHead

    torch.manual_seed(1)
    head = AestheticHead(32)
    torch.save(head.state_dict(), tmp_path / AestheticScore.HEAD_FILE)
    monkeypatch.setattr(
        "fkdiff.rewards.clip._load_open_clip",
        lambda name, pretrained, device: (tiny_clip, None, 32, (0.5,) * 3, (0.5,) * 3),
    )
    r = AestheticScore.from_pretrained(head=str(tmp_path), clip_model=TINY, clip_pretrained=None)
    x = images(4)
    emb = tiny_clip.encode_image(
        (torch.nn.functional.interpolate(x, size=(32, 38), mode="bicubic", antialias=True)[..., 3:35] - 0.5) / 0.5
    )
    torch.testing.assert_close(r(x), head.eval()(torch.nn.functional.normalize(emb, dim=-1)), rtol=1e-4, atol=1e-4)
    assert r.differentiable
    with pytest.raises(FileNotFoundError, match=r"sac\+logos.*no-such/repo.*local file"):
        AestheticScore.from_pretrained(head="no-such/repo", clip_model=TINY, clip_pretrained=None)


def test_classifier_reward_is_log_probability():
    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    r = ClassifierReward(clf, target=3, batch_size=2)
    x = torch.rand(5, 3, 8, 8, requires_grad=True)
    s = r(x)
    torch.testing.assert_close(s, torch.log_softmax(clf(x), -1)[:, 3])
    assert (s <= 0).all()
    s.sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="target"):
        ClassifierReward(clf, target=-1)
    with pytest.raises(ValueError, match="no class 12"):
        ClassifierReward(clf, target=12)(x)


def index_reward(images, prompts=None):
    """Returns each image's index, encoded in its first pixel."""
    return images[:, 0, 0, 0] * 100


def test_order_preserved_across_chunks():
    x = torch.zeros(7, 1, 2, 2)
    x[:, 0, 0, 0] = torch.arange(7) / 100
    r = FunctionReward(index_reward, batch_size=3)
    torch.testing.assert_close(r(x), torch.arange(7, dtype=torch.float32))


def test_non_finite_and_wrong_shape_name_the_reward():
    def nan_reward(images, prompts=None):
        return torch.full((images.shape[0],), math.nan)

    with pytest.raises(ValueError, match="nan_reward.*non-finite"):
        FunctionReward(nan_reward)(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"two_scores.*shape \[2\]"):
        FunctionReward(lambda im, p: torch.zeros(im.shape[0], 2), name="two_scores")(torch.rand(2, 3, 4, 4))
    with pytest.raises(TypeError, match="images"):
        FunctionReward(index_reward)(torch.rand(3, 4, 4))


def test_weighted_sum_and_normalized():
    def a(images, prompts=None):
        return images.mean((1, 2, 3))

    def b(images, prompts=None):
        return images.amax((1, 2, 3))

    x = torch.rand(4, 3, 5, 5)
    torch.testing.assert_close(WeightedSum([(a, 2.0), (b, -1.0)])(x), 2 * a(x) - b(x))
    torch.testing.assert_close(Normalized(a, mean=0.5, std=0.25)(x), (a(x) - 0.5) / 0.25)
    with pytest.raises(ValueError, match="std"):
        Normalized(a, 0.0, 0.0)


def test_rank_ensemble_averages_ranks_with_ties():
    torch.testing.assert_close(
        RankEnsemble.ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])), torch.tensor([3.5, 1.0, 3.5, 2.0], dtype=torch.float64)
    )

    def first(images, prompts=None):
        return torch.tensor([0.1, 0.9, 0.5])

    def second(images, prompts=None):
        return torch.tensor([10.0, -5.0, 0.0])

    out = RankEnsemble([first, second])(torch.rand(3, 1, 2, 2))
    torch.testing.assert_close(out, torch.tensor([2.0, 2.0, 2.0]))  # (1+3)/2, (3+1)/2, (2+2)/2
    assert not RankEnsemble([first]).differentiable


def test_pickscore_from_local_folders(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from fkdiff.rewards import PickScore
    from fkdiff.testing import build_clip_tokenizer

    torch.manual_seed(0)
    text = dict(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=514,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    vision = dict(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32, patch_size=8
    )
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(tmp_path / "m")
    build_clip_tokenizer(tmp_path / "tok")
    r = PickScore.from_pretrained(str(tmp_path / "m"), str(tmp_path / "tok"), batch_size=2)
    x = images(3).requires_grad_(True)
    s = r(x, ["a cat", "a dog", "a tree"])
    assert s.shape == (3,) and torch.isfinite(s).all()
    torch.testing.assert_close(r(x.flip(0), ["a tree", "a dog", "a cat"]), s.flip(0), rtol=1e-4, atol=1e-4)
    s.sum().backward()
    assert x.grad.abs().sum() > 0
    build_clip_tokenizer(tmp_path / "m")  # a tokenizer inside the model folder is used by default
    same = PickScore.from_pretrained(str(tmp_path / "m"), batch_size=2)
    torch.testing.assert_close(same(x.detach(), ["a cat", "a dog", "a tree"]), s.detach())


def test_hpsv2_from_local_checkpoint(tiny_clip, tmp_path):
    from fkdiff.rewards import CLIPScore, HPSv2

    torch.save({"state_dict": tiny_clip.state_dict()}, tmp_path / HPSv2.FILE)
    r = HPSv2.from_pretrained(str(tmp_path), clip_model=TINY)
    x = images(2)
    ref = CLIPScore(tiny_clip, open_clip.get_tokenizer(TINY), 32)(x, ["a", "b"]) / 100
    torch.testing.assert_close(r(x, ["a", "b"]), ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="HPS_v2.1_compressed.pt"):
        HPSv2.from_pretrained("offline/repo", clip_model=TINY)


def test_rewards_accept_other_dtypes(tiny_clip):
    """fp32 images into a bf16 reward model and bf16 images into an fp32 one: finite float32 scores close to
    the fp32 ones (bf16 keeps ~3 significant digits)."""
    import copy

    from fkdiff.rewards import CLIPScore

    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 40 * 48, 4))
    tok = open_clip.get_tokenizer(TINY)
    for model, make in ((clf, lambda m: ClassifierReward(m, target=1)), (tiny_clip, lambda m: CLIPScore(m, tok, 32))):
        ref = make(copy.deepcopy(model))
        half = make(copy.deepcopy(model).to(torch.bfloat16))
        x = images(3)
        prompts = ["a", "b", "c"]
        want = ref(x, prompts)
        for got in (half(x, prompts), ref(x.to(torch.bfloat16), prompts)):
            assert got.dtype == torch.float32 and torch.isfinite(got).all()
            torch.testing.assert_close(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())
