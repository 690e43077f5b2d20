"""Head probe: would a richer head over a trained towers checkpoint's features beat its product head? Fits
heads on FROZEN features of the checkpoint (train split) and scores them on the validation split and the
casual_chat dev proxy (never the held-out file):

    python -m pairbert.training.head_probe runs/default/best [--seed 0]

- product: a logistic fit on u*v, the normalised question and answer embeddings (the model's own head
  refitted: the reference);
- bilinear: u^T W v + b, W starting at the identity times 10, so cross-dimension pairs can match (weight
  decay 0, 1e-4, 1e-3);
- mlp: a hidden layer (64, 256) over [u*v, |u-v|, u, v] (SBERT's classification features);
- late cross layer: the checkpoint's last BERT layer (copied from the QA branch) run over the question's and
  the answer's layer-5 token states side by side, so they attend to each other; its mean-pooled output
  adds to the model's own logit through a linear map started at zero (encoder lr 5e-5 and 2e-4, 4 epochs).

Prints train / validation / dev accuracy (%) per head. Towers checkpoints only.
"""

from __future__ import annotations

import argparse
import random

import torch

from pairbert.builtin_data import DATA_DIR
from pairbert.runtime.pair_files import read_pairs

from .batches import encode_batch
from .checkpoint import load_checkpoint
from .loop import INPUTS

SPLITS = {
    "train": DATA_DIR / "train.jsonl",
    "val": DATA_DIR / "validation.jsonl",
    "dev": DATA_DIR / "dev" / "casual_chat.jsonl",
}


def features(checkpoint: str) -> tuple[dict, dict]:
    """Per split: (u, v, token states of layer 5 per pair, the model's logit margin, labels); the last
    layer's weights."""
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model.eval()
    if model.config.pairing != "towers":
        raise SystemExit(f"{checkpoint}: a towers checkpoint is needed (pairing is {model.config.pairing!r})")
    out = {}
    for name, path in SPLITS.items():
        pairs = read_pairs(path, require_label=True)
        us, vs, tokens, margins = [], [], [], []
        with torch.inference_mode():
            for i in range(0, len(pairs), 64):
                b = encode_batch(ckpt.encoder, pairs[i : i + 64], with_labels=False)
                q, q_mask, a, a_mask = model.tower_states(
                    *(b[f"{order}_{name}"] for order in ("qa", "aq") for name in INPUTS), hidden_states=True
                )
                u, v = model.tower_pools(q, q_mask, a, a_mask)  # over the states just computed
                logits = model._head(u * v, None).logits
                us.append(u)
                vs.append(v)
                margins.append(logits[:, 1] - logits[:, 0])
                for j in range(len(q_mask)):
                    nq, na = int(q_mask[j].sum()), int(a_mask[j].sum())
                    tokens.append((q.hidden_states[-2][j, :nq].clone(), a.hidden_states[-2][j, :na].clone()))
        labels = torch.tensor([p.label for p in pairs])
        out[name] = (torch.cat(us), torch.cat(vs), tokens, torch.cat(margins), labels)
    return out, model.qa_encoder.encoder.layer[-1].state_dict()


def _accuracy(margin: torch.Tensor, labels: torch.Tensor) -> float:
    return round(100 * ((margin > 0).long() == labels).float().mean().item(), 2)


def fit_head(data: dict, head, params, lr: float = 1e-2, weight_decay: float = 0.0, steps: int = 300) -> list:
    """Full-batch Adam on the train split's (u, v); accuracy on train, val, dev."""
    u, v, _, _, labels = data["train"]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(u, v), labels.float())
        loss.backward()
        opt.step()
    with torch.no_grad():
        return [_accuracy(head(d[0], d[1]), d[4]) for d in (data[s] for s in SPLITS)]


class LateCross(torch.nn.Module):
    """The last BERT layer over [question tokens; answer tokens] (layer-5 states of each tower), mean-pooled,
    a linear map started at zero, added to the model's own logit margin."""

    def __init__(self, layer_state: dict, hidden: int):
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertLayer

        super().__init__()
        heads = layer_state["attention.self.query.weight"].shape[0] // 32  # MiniLM: head size 32
        cfg = BertConfig(
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=layer_state["intermediate.dense.weight"].shape[0],
        )
        cfg._attn_implementation = "eager"
        self.layer = BertLayer(cfg)
        self.layer.load_state_dict(layer_state)
        self.answer_type = torch.nn.Parameter(torch.zeros(hidden))
        self.out = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)

    def forward(self, x, mask, is_answer, margin):
        h = x + is_answer * self.answer_type
        extended = (1.0 - mask[:, None, None, :]) * -1e4
        h = self.layer(h, attention_mask=extended)
        h = h[0] if isinstance(h, tuple) else h
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return margin + self.out(pooled).squeeze(-1)


def _side_by_side(rows, margins, hidden: int):
    width = max(len(q) + len(a) for q, a in rows)
    x = torch.zeros(len(rows), width, hidden)
    mask = torch.zeros(len(rows), width)
    is_answer = torch.zeros(len(rows), width, 1)
    for i, (q, a) in enumerate(rows):
        x[i, : len(q)] = q
        x[i, len(q) : len(q) + len(a)] = a
        mask[i, : len(q) + len(a)] = 1
        is_answer[i, len(q) : len(q) + len(a)] = 1
    return x, mask, is_answer, margins


def fit_late_cross(data: dict, layer_state: dict, lr: float, seed: int, epochs: int = 4) -> list:
    torch.manual_seed(seed)
    order = random.Random(seed)
    hidden = data["train"][0].shape[1]
    model = LateCross(layer_state, hidden)
    opt = torch.optim.AdamW(
        [
            {"params": model.layer.parameters(), "lr": lr},
            {"params": [model.answer_type, *model.out.parameters()], "lr": 1e-3},
        ],
        weight_decay=0.01,
    )
    _, _, rows, margins, labels = data["train"]
    index = list(range(len(rows)))
    for _ in range(epochs):
        order.shuffle(index)
        model.train()
        for i in range(0, len(index), 32):
            pick = index[i : i + 32]
            batch = _side_by_side([rows[j] for j in pick], margins[pick], hidden)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(*batch), labels[pick].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    scores = []
    with torch.no_grad():
        for split in SPLITS:
            _, _, rows, margins, labels = data[split]
            got = torch.cat(
                [
                    model(*_side_by_side(rows[i : i + 64], margins[i : i + 64], hidden))
                    for i in range(0, len(rows), 64)
                ]
            )
            scores.append(_accuracy(got, labels))
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    data, last_layer = features(args.checkpoint)
    print("splits: train / validation / casual_chat dev, accuracy %")
    print("the model itself", [_accuracy(data[s][3], data[s][4]) for s in SPLITS])
    hidden = data["train"][0].shape[1]
    w, b = torch.full((hidden,), 10.0, requires_grad=True), torch.zeros(1, requires_grad=True)
    print("product head, refitted", fit_head(data, lambda u, v: (u * v) @ w + b, [w, b]))
    for decay in (0.0, 1e-4, 1e-3):
        weight = torch.eye(hidden).mul(10.0).requires_grad_(True)
        bias = torch.zeros(1, requires_grad=True)
        head = lambda u, v, W=weight, c=bias: ((u @ W) * v).sum(-1) + c  # noqa: E731
        print(f"bilinear, weight decay {decay:g}", fit_head(data, head, [weight, bias], weight_decay=decay))
    for width in (64, 256):
        mlp = torch.nn.Sequential(
            torch.nn.Linear(4 * hidden, width), torch.nn.GELU(), torch.nn.Linear(width, 1)
        )
        head = lambda u, v, m=mlp: m(torch.cat([u * v, (u - v).abs(), u, v], -1)).squeeze(-1)  # noqa: E731
        print(f"mlp {width}", fit_head(data, head, list(mlp.parameters()), lr=1e-3, weight_decay=1e-4))
    for lr in (5e-5, 2e-4):
        print(f"late cross layer, lr {lr:g}", fit_late_cross(data, last_layer, lr, args.seed))


if __name__ == "__main__":
    main()
