"""A small GPT-2 classifier trained on two independent sub-tasks (planted modules), on CPU, seeded.

Each example is a sequence of ``T`` tokens drawn from two disjoint vocabularies, A (ids 1-7) and B
(ids 8-15); the label is ``2 * a + b`` where ``a`` says whether the A-token ``A_MARK`` occurs and ``b``
whether the B-token ``B_MARK`` does. The two bits are independent and read disjoint tokens, so a
network that solves the task needs nothing shared between them: the heads and neurons that find the
A-mark can be lesioned without touching the B-bit, which is the planted modular structure the
paper's importance test (lesions against random same-size same-layer controls) looks at.

    python examples/transformers/planted_modules.py OUT_DIR   # ~1 minute on two busy CPU cores

writes ``OUT_DIR/model`` (a Hugging Face folder: config.json, model.safetensors) and
``OUT_DIR/test.npz`` (input_ids, attention_mask, labels), so that

    modtest audit OUT_DIR/model --data OUT_DIR/test.npz --k 6 --protocol paper
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

T, VOCAB, A_MARK, B_MARK = 10, 16, 2, 9
A_TOKENS, B_TOKENS = np.arange(1, 8), np.arange(8, 16)


def make_data(n: int, seed: int = 0):
    """``(input_ids (n, T), labels (n,))``: half the A-marks and half the B-marks present, independently."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    ids = np.empty((n, T), dtype=np.int64)
    no_a, no_b = A_TOKENS[A_TOKENS != A_MARK], B_TOKENS[B_TOKENS != B_MARK]
    for i in range(n):
        from_a = rng.random(T) < 0.5
        row = np.where(from_a, rng.choice(no_a, T), rng.choice(no_b, T))
        pos = rng.permutation(T)[:2]
        if a[i]:
            row[pos[0]] = A_MARK
        if b[i]:
            row[pos[1]] = B_MARK
        ids[i] = row
    return ids, 2 * a + b


def build(seed: int = 0, n_embd: int = 16, n_head: int = 2, n_inner: int = 16):
    from modtest.frameworks.torch.runtime import import_torch
    from modtest.frameworks.transformers.runtime import import_transformers

    import_transformers()  # modtest's import: triton kept out where TensorFlow is loaded
    torch = import_torch()
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=n_embd, n_head=n_head, n_inner=n_inner, vocab_size=VOCAB, n_positions=T,
                     num_labels=4,
                     use_cache=False, pad_token_id=0, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2ForSequenceClassification(cfg)


def train(steps: int = 400, seed: int = 0, n_train: int = 4000, batch: int = 64, lr: float = 3e-3, **arch):
    """The trained classifier (eval mode); seeded: the same seed, the same weights on one machine."""
    import torch

    torch.manual_seed(seed)
    model = build(seed, **arch)
    ids, y = make_data(n_train, seed=seed + 1)
    ids, y = torch.as_tensor(ids), torch.as_tensor(y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(ids), (batch,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids[idx]).logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def accuracy(model, ids, y) -> float:
    import torch

    with torch.inference_mode():
        return float((model(input_ids=torch.as_tensor(ids)).logits.argmax(-1).numpy() == y).mean())


def main(out: str) -> None:
    import torch

    torch.set_num_threads(2)
    out_dir = Path(out)
    model = train()
    ids, y = make_data(500, seed=123)
    print(f"test accuracy {accuracy(model, ids, y):.3f}")
    model.save_pretrained(out_dir / "model")
    np.savez(out_dir / "test.npz", input_ids=ids, attention_mask=np.ones_like(ids), labels=y)
    print(f"wrote {out_dir / 'model'} and {out_dir / 'test.npz'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "planted_gpt2")
