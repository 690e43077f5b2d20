"""The training loop: settings in one dataclass, read top to bottom.

Per epoch: length-grouped shuffled batches → forward both orders → cross-entropy → clip → AdamW step →
linear warm-up/decay. After each epoch: evaluate on validation, write `last/` (resumable) and, when
validation accuracy improved, `best/`. Seeds are derived from (seed, epoch), so a resumed run replays
exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from pairbert.builtin_data import BUILTIN_TRAIN, BUILTIN_VALIDATION, local, portable
from pairbert.runtime.errors import PairbertError
from pairbert.runtime.pair_files import Pair, read_pairs
from pairbert.runtime.tokenization import PairEncoder

from .batches import encode_batch, sequential_batches, training_batches
from .checkpoint import (
    check_output_dir,
    find_checkpoint,
    length_problem,
    load_checkpoint,
    load_trainer_state,
    resume_differences,
    save_checkpoint,
    stored_train_config,
    vocab_problem,
)
from .metrics import classification_metrics, epoch_line, plot_history
from .weights import DEFAULT_SOURCE, build_model, resolve_source, tokenizer_file_for

log = logging.getLogger(__name__)


class TrainingError(PairbertError, RuntimeError):
    pass


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    source: str = DEFAULT_SOURCE  # "minilm", a local BERT folder, a hub name, or "random:NAME"
    tokenizer: str | None = None  # tokenizer.json; defaults to the source's own
    train_file: str = str(BUILTIN_TRAIN)
    validation_file: str | None = str(BUILTIN_VALIDATION)
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 2e-5
    head_learning_rate: float | None = None  # head + poolers; None: 1e-3 for towers, learning_rate for cross
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 128
    seed: int = 42
    device: str = "auto"  # "auto", "cpu", "cuda"
    progress: bool = True
    resume: bool = False  # continue from output_dir/last, with the settings stored there
    resume_override: bool = False  # resume even where a setting differs from the checkpoint's (else an error)
    stop_after_epochs: int | None = None  # end early (as if interrupted) after this many epochs
    pooling: str = (
        "auto"  # "cls" (the notebook's pooler), "mean", "cls+mean"; auto: mean for towers, else cls
    )
    patience: int | None = None  # stop after this many epochs without a better validation accuracy
    distill: float = (
        0.5  # weight of the teacher's soft targets (0: hard labels; no teacher for a random init)
    )
    teacher_negatives: int = (
        0  # extra pairs per question: other questions' answers, labelled 0, teacher-scored
    )
    plot: bool = True  # training_curve.png beside metrics.json
    single_order: bool = False  # ablation: the QA branch only (what the second order buys); not exportable
    pairing: str = "auto"  # "cross" or "towers" (model.py); auto: towers when the source has a baseline
    contrastive: float | None = None  # towers: weight of the in-batch loss; None: 1.0 for towers, 0 for cross
    freeze_embeddings: bool = False  # keep both encoders' embedding tables as the source has them
    # in-batch loss shape (None: off; measured within noise, see README): also rank against the batch's
    # negative answers, a question's pairs in one batch; and each answer must also pick its own question
    contrastive_negatives: bool | None = None
    contrastive_symmetric: bool | None = None


IN_BATCH_OPTIONS = ("contrastive_negatives", "contrastive_symmetric")  # off unless asked (README: noise)
TOWERS_CONTRASTIVE = 1.0  # in-batch loss weight for the towers by default (measured: notes/quality2)
TOWERS_HEAD_LR = 1e-3  # the towers' head starts at the baseline's fit and moves faster than the encoders
HEAD_PREFIXES = ("classifier.", "qa_encoder.pooler.", "aq_encoder.pooler.")


def weight_decay_groups(model: nn.Module, weight_decay: float, head_lr: float | None = None) -> list[dict]:
    """Decay matrices and embeddings; never biases or LayerNorm parameters.

    With `head_lr`, the head and both poolers (new, or never trained for this task) get their own rate.
    """
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            no_decay.add(id(p))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = []
    for is_head in (False, True) if head_lr is not None else (None,):
        members = [(n, p) for n, p in named if is_head is None or n.startswith(HEAD_PREFIXES) == is_head]
        extra = {"lr": head_lr} if is_head else {}
        groups += [
            {
                "params": [p for _, p in members if id(p) not in no_decay],
                "weight_decay": weight_decay,
                **extra,
            },
            {"params": [p for _, p in members if id(p) in no_decay], "weight_decay": 0.0, **extra},
        ]
    return groups


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' asked for, but torch sees no CUDA GPU")
    return torch.device(name)


@torch.no_grad()
def evaluate(model, encoder: PairEncoder, pairs: list[Pair], batch_size: int = 64, device=None) -> dict:
    model.eval()
    device = device or next(model.parameters()).device
    losses, predictions = [], []
    for idx in sequential_batches(len(pairs), batch_size):
        batch = {k: v.to(device) for k, v in encode_batch(encoder, [pairs[i] for i in idx]).items()}
        out = model(**batch)
        if out.loss is not None and torch.isfinite(out.loss):
            losses.append(out.loss.item() * len(idx))
        predictions.extend(out.logits.argmax(-1).tolist())
    metrics = classification_metrics([p.label for p in pairs], predictions)
    metrics["loss"] = sum(losses) / len(pairs) if losses else float("nan")
    return metrics


def _autocast(device: torch.device):
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _prepare(cfg: TrainConfig):
    """(settings with 'auto' resolved, model, encoder, trainer state or None, tokenizer file, teacher): a new
    run from the weight source, or the run stored in OUTPUT_DIR/last when resuming."""
    if cfg.resume:
        from pairbert.runtime.atomic_dir import recover

        last = find_checkpoint(
            recover(Path(cfg.output_dir) / "last")
        )  # finish or roll back a swap a kill interrupted
        cfg = resolve_from_checkpoint(cfg, stored_train_config(last))
        _check_resume_settings(last, cfg)
        ckpt = load_checkpoint(last)
        model, encoder, state = ckpt.model, ckpt.encoder, load_trainer_state(ckpt.path)
        tokenizer_file = ckpt.path / "tokenizer.json"
        log.info("resuming from %s after epoch %d", ckpt.path, state["epoch"])
    else:
        tokenizer_file = Path(cfg.tokenizer) if cfg.tokenizer else tokenizer_file_for(cfg.source)
        if tokenizer_file is None or not tokenizer_file.is_file():
            raise TrainingError(f"no tokenizer.json for source {cfg.source!r}; pass --tokenizer")
        encoder = PairEncoder.from_file(tokenizer_file, cfg.max_length)
        state = None
    if state is None:
        teacher = _teacher(cfg) if cfg.distill or cfg.pairing in ("towers", "auto") else None
        cfg = resolve_auto(cfg, teacher is not None)
        torch.manual_seed(cfg.seed)
        model = build_model(
            cfg.source,
            vocab_size=encoder.tokenizer.get_vocab_size(),
            pooling=cfg.pooling,
            single_order=cfg.single_order,
            pairing=cfg.pairing,
        )
    else:  # resuming: the checkpoint's model says what 'auto' became
        cfg = resolve_auto(replace(cfg, pairing=model.config.pairing, pooling=model.config.pooling), True)
        teacher = _teacher(cfg) if cfg.distill else None
        if cfg.distill and teacher is None and resolve_source(cfg.source)[1] is None:  # not a random init:
            # the run distilled, and cannot go on without its teacher
            raise TrainingError(
                f"resume: the run distilled from the zero-shot baseline of {cfg.source!r}, which cannot be "
                "loaded here (run with -v for why); resume where it can, or pass --override --distill 0"
            )
    problem = length_problem(cfg.max_length, model)
    if problem:  # (a fresh run's CLI says so first; a resume with --override --max-length gets here)
        raise TrainingError(f"--max-length: {problem}")
    problem = vocab_problem(encoder, model)
    if problem:
        raise TrainingError(
            f"the tokenizer {problem} of {cfg.source!r} (pass the source's own tokenizer, or none)"
        )
    encoder = encoder.for_pairing(cfg.pairing)  # towers: each branch gets only its segment
    if cfg.freeze_embeddings:
        for branch in (model.qa_encoder, model.aq_encoder):
            if branch is not None:
                branch.embeddings.requires_grad_(False)
    if cfg.contrastive and cfg.pairing != "towers":
        raise TrainingError(
            "--contrastive needs --pairing towers (it compares question and answer embeddings)"
        )
    if teacher is not None and state is None and cfg.pairing == "towers":
        model.init_head_from_cosine(*teacher.fit.platt)  # the untrained model is the calibrated baseline
    return cfg, model, encoder, state, tokenizer_file, teacher


def _optimizer(cfg: TrainConfig, model, total_steps: int, state: dict | None):
    """AdamW and the linear warm-up/decay schedule over `total_steps`, with the stored progress when
    resuming: (optimizer, scheduler, history, best accuracy, first epoch, step)."""
    optimizer = torch.optim.AdamW(
        weight_decay_groups(model, cfg.weight_decay, cfg.head_learning_rate), lr=cfg.learning_rate
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    history: list[dict] = []
    best_accuracy, start_epoch, step = -1.0, 0, 0
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # e.g. --head-lr adds parameter groups the checkpoint's optimizer lacks
            raise TrainingError(
                f"resume: the checkpoint's optimizer state does not fit these settings ({exc}); "
                "resume with the settings the run started with"
            ) from None
        scheduler.load_state_dict(state["scheduler"])
        history, best_accuracy, start_epoch, step = (
            state["history"],
            state["best_accuracy"],
            state["epoch"],
            state["step"],
        )

    return optimizer, scheduler, history, best_accuracy, start_epoch, step


def _run_epoch(
    cfg: TrainConfig,
    model,
    optimizer,
    scheduler,
    bar,
    encoder,
    train_pairs,
    soft,
    device,
    epoch: int,
    step: int,
) -> tuple[float, int]:
    """One pass over the batches: (summed loss, step after the epoch)."""
    running = 0.0
    for i, idx in enumerate(bar):
        batch = {k: v.to(device) for k, v in encode_batch(encoder, [train_pairs[j] for j in idx]).items()}
        with _autocast(device):
            loss = pair_loss(
                model,
                batch,
                soft,
                idx,
                cfg.distill,
                cfg.contrastive,
                (cfg.contrastive_negatives, cfg.contrastive_symmetric),
            )
        if not torch.isfinite(loss):
            raise TrainingError(
                f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {step + 1}; "
                f"try a lower --lr (now {cfg.learning_rate})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        running += loss.item()
        bar.set_postfix(loss=f"{running / (i + 1):.4f}")
    return running, step


def _save_epoch(out: Path, model, tokenizer_file: Path, settings: dict, improved: bool, state: dict) -> None:
    """`best/` when validation improved (written first), then the resumable `last/`."""
    if improved:
        save_checkpoint(out / "best", model, tokenizer_file, settings)
    save_checkpoint(out / "last", model, tokenizer_file, settings, state)


PATH_SETTINGS = ("source", "tokenizer", "train_file", "validation_file")


def _recorded(name: str, value: object) -> object:
    """One path setting as a run records it: absolute, and the built-in data by name (`portable`), so
    resuming, evaluating or exporting from another folder finds the same files."""
    if not isinstance(value, str) or not value:
        return value
    if name in ("train_file", "validation_file"):
        return portable(value)
    if name == "tokenizer" or (name == "source" and Path(value).is_dir()):
        return str(Path(value).resolve())
    return value  # a source by name: "minilm", "random:tiny", a hub name


def recorded_paths(cfg: TrainConfig) -> TrainConfig:
    """The settings with their files and folders as a run records them (`_recorded`)."""
    return replace(cfg, **{name: _recorded(name, getattr(cfg, name)) for name in PATH_SETTINGS})


def train(cfg: TrainConfig) -> dict:
    out = Path(cfg.output_dir)
    check_output_dir(out)  # before any work: only checkpoints are ever replaced there
    device = pick_device(cfg.device)
    cfg = recorded_paths(cfg)
    train_file = local(cfg.train_file)
    train_pairs = read_pairs(train_file, require_label=True)
    if len({p.label for p in train_pairs}) < 2:  # it would learn to answer that label for everything
        raise TrainingError(
            f"{train_file}: every pair is labelled {train_pairs[0].label}; a classifier needs "
            "pairs of both labels"
        )
    val_pairs = read_pairs(local(cfg.validation_file), require_label=True) if cfg.validation_file else []

    cfg, model, encoder, state, tokenizer_file, teacher = _prepare(cfg)
    model.to(device)
    train_pairs, soft = training_targets(cfg, train_pairs, teacher)

    plan = _epoch_plan(cfg, encoder, train_pairs)
    optimizer, scheduler, history, best_accuracy, start_epoch, step = _optimizer(
        cfg, model, sum(map(len, plan)), state
    )
    settings = {"max_length": cfg.max_length, "train_config": {**asdict(cfg), "resume": False}}
    started = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.stop_after_epochs is not None and epoch >= cfg.stop_after_epochs:
            break
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout stream per epoch: resume-exact
        model.train()
        batches = plan[epoch]
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False)
        running, step = _run_epoch(
            cfg, model, optimizer, scheduler, bar, encoder, train_pairs, soft, device, epoch, step
        )
        if not all(torch.isfinite(p).all() for p in model.parameters()):  # before anything is saved as best
            raise TrainingError(
                f"non-finite weights after epoch {epoch + 1} (training diverged); nothing saved "
                f"for this epoch; try a lower --lr (now {cfg.learning_rate})"
            )
        record = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": running / max(1, len(batches)),
            "elapsed_s": round(time.perf_counter() - started, 2),
        }
        if val_pairs:
            val = evaluate(model, encoder, val_pairs, device=device)
            record.update({f"val_{k}": v for k, v in val.items()})
            improved = val["accuracy"] > best_accuracy
        else:
            improved = True
        history.append(record)
        log.info("epoch %d: %s", epoch + 1, {k: v for k, v in record.items() if k != "val_confusion_matrix"})
        if cfg.progress:
            tqdm.write(epoch_line(record, cfg.epochs))
        if improved:
            best_accuracy = record.get("val_accuracy", best_accuracy)
        progress = {"history": history, "best_accuracy": best_accuracy, "epoch": epoch + 1, "step": step}
        trainer_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **progress}
        saved = {**settings, "epoch": epoch + 1, "metrics": record}
        _save_epoch(out, model, tokenizer_file, saved, improved, trainer_state)
        _write_json(out / "metrics.json", {"history": history, "best_val_accuracy": best_accuracy})
        if cfg.plot:
            plot_history(history, out / "training_curve.png")
        if should_stop(history, cfg.patience):
            log.info("no better validation accuracy for %d epochs: stopping", cfg.patience)
            break
    return {"history": history, "best_val_accuracy": best_accuracy, "output_dir": str(out)}


def _epoch_plan(cfg: TrainConfig, encoder, train_pairs: list[Pair]) -> list[list]:
    """Every epoch's batches, fixed up front from the seed (so a resumed run takes the same ones)."""
    lengths = encoder.fed_lengths([p.question for p in train_pairs], [p.answer for p in train_pairs])
    # with the batch's negative answers in the in-batch loss, a question's pairs share a batch: its own wrong
    # answer (often a same-topic one) is then among the answers it must rank below its true one
    keys = [p.question for p in train_pairs] if cfg.contrastive and cfg.contrastive_negatives else None
    return [  # keeping a question's pairs together can make more than pairs/batch batches
        training_batches(lengths, cfg.batch_size, seed=cfg.seed * 1000 + epoch, keys=keys)
        for epoch in range(cfg.epochs)
    ]


def should_stop(history: list[dict], patience: int | None) -> bool:
    """Early stopping: the last `patience` epochs brought no better validation accuracy than before them."""
    if not patience or len(history) <= patience or "val_accuracy" not in history[-1]:
        return False
    before = max(h["val_accuracy"] for h in history[:-patience])
    return max(h["val_accuracy"] for h in history[-patience:]) <= before


def resolve_auto(cfg: TrainConfig, has_teacher: bool) -> TrainConfig:
    """Pick 'auto' pairing/pooling: towers + mean from a pretrained sentence encoder (it starts as the
    baseline), the notebook's cross + [CLS] for a random init (no baseline to start from)."""
    pairing = cfg.pairing if cfg.pairing != "auto" else ("towers" if has_teacher else "cross")
    pooling = cfg.pooling if cfg.pooling != "auto" else ("mean" if pairing == "towers" else "cls")
    head_lr = cfg.head_learning_rate
    if head_lr is None and pairing == "towers":
        head_lr = TOWERS_HEAD_LR
    contrastive = cfg.contrastive
    if contrastive is None:
        contrastive = TOWERS_CONTRASTIVE if pairing == "towers" else 0.0
    shape = {}
    for name in IN_BATCH_OPTIONS:
        value = getattr(cfg, name)
        if value and not contrastive:
            flag = "--" + name.replace("_", "-")
            raise TrainingError(f"{flag} shapes the in-batch loss: it needs --contrastive > 0 (towers)")
        shape[name] = bool(value)
    return replace(
        cfg, pairing=pairing, pooling=pooling, head_learning_rate=head_lr, contrastive=contrastive, **shape
    )


def resolve_from_checkpoint(cfg: TrainConfig, stored: dict) -> TrainConfig:
    """On resume, 'auto' pairing/pooling and a default head rate mean what the run resolved them to."""
    return replace(
        cfg,
        pairing=stored.get("pairing", cfg.pairing) if cfg.pairing == "auto" else cfg.pairing,
        pooling=stored.get("pooling", cfg.pooling) if cfg.pooling == "auto" else cfg.pooling,
        head_learning_rate=stored.get("head_learning_rate")
        if cfg.head_learning_rate is None
        else cfg.head_learning_rate,
        contrastive=stored.get("contrastive", 0.0) if cfg.contrastive is None else cfg.contrastive,
        **{
            name: stored.get(name, False) if getattr(cfg, name) is None else getattr(cfg, name)
            for name in IN_BATCH_OPTIONS
        },
    )


def _teacher(cfg: TrainConfig):
    """The zero-shot bi-encoder of the weight source, fitted on the training file; None for a random init."""
    from .baseline import Teacher, baseline_for
    from .weights import WeightSourceError

    try:
        embedder, fit = baseline_for(cfg.source, local(cfg.train_file), cfg.max_length)
    except WeightSourceError as exc:
        log.info("no teacher (%s): no distillation, no towers", exc)
        return None
    log.info("teacher: threshold %.4f, logistic fit %s", fit.threshold, fit.platt)
    return Teacher(embedder, fit)


def training_targets(
    cfg: TrainConfig, pairs: list[Pair], teacher=None
) -> tuple[list[Pair], list[float] | None]:
    """The training pairs (plus `teacher_negatives` other-answer pairs per question) and, when distilling,
    the teacher's match probability for each. Deterministic for the seed."""
    if not cfg.distill and not cfg.teacher_negatives:
        return pairs, None
    import random

    rng = random.Random(cfg.seed)
    answers_of: dict[str, set[str]] = {}
    for p in pairs:
        if p.label == 1:
            answers_of.setdefault(p.question, set()).add(p.answer)
    answers = sorted({a for group in answers_of.values() for a in group})
    extra = []
    for question in sorted(answers_of):
        for _ in range(cfg.teacher_negatives):
            answer = rng.choice(answers)
            if answer not in answers_of[question]:
                extra.append(Pair(question, answer, 0))
    pairs = list(pairs) + extra
    if not cfg.distill or teacher is None:
        return pairs, None
    soft = teacher.probabilities(pairs)
    log.info("teacher: %d pairs scored (%d extra negatives)", len(pairs), len(extra))
    return pairs, soft


INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CONTRASTIVE_SCALE = (
    20.0  # cosine → logit scale of the in-batch loss (the one all-MiniLM-L6-v2 was trained with)
)


def pair_loss(
    model,
    batch: dict,
    soft: list[float] | None,
    idx: list[int],
    distill: float,
    contrastive: float = 0.0,
    in_batch: tuple[bool, bool] = (False, False),
) -> torch.Tensor:
    """Cross-entropy on the hard labels, mixed with the teacher's soft targets when distilling, plus (towers,
    `contrastive` > 0) the in-batch loss: each positive pair's question must pick its own answer among the
    batch's other positive answers."""
    if contrastive:
        labels = batch["labels"]
        u, v = model.tower_embeddings(
            *(batch[f"{order}_{name}"] for order in ("qa", "aq") for name in INPUTS)
        )
        out = model._head(u * v, labels)
        loss = out.loss + contrastive * in_batch_loss(u, v, labels, batch, *in_batch)
    else:
        out = model(**batch)
        loss = out.loss
    if soft is None or not distill:
        return loss
    p = torch.tensor([soft[i] for i in idx], dtype=out.logits.dtype, device=out.logits.device)
    target = torch.stack([1 - p, p], dim=-1)
    soft_loss = -(target * torch.log_softmax(out.logits, dim=-1)).sum(-1).mean()
    return loss - distill * out.loss + distill * soft_loss


def in_batch_loss(
    u: torch.Tensor,
    v: torch.Tensor,
    labels: torch.Tensor,
    batch: dict | None = None,
    negatives: bool = False,
    symmetric: bool = False,
) -> torch.Tensor:
    """Multiple-negatives ranking loss over the batch's positive pairs (zero with fewer than two): each
    positive question must pick its own answer among the batch's other positive answers (`negatives`: and
    the answers of the batch's negative pairs, often a same-topic answer to the same question); `symmetric`:
    each positive answer must also pick its own question. Given the batch's token ids, a candidate that is
    right too is left out rather than counted as wrong: the same answer text, or another positive pair that
    shares the question (two right answers) or the answer (one answer to two questions)."""
    positive = labels == 1
    if int(positive.sum()) < 2:
        return u.sum() * 0.0
    rows = positive.nonzero().squeeze(1)
    columns = torch.arange(len(labels), device=u.device) if negatives else rows
    scores = CONTRASTIVE_SCALE * u[rows] @ v[columns].T
    target = (columns.unsqueeze(0) == rows.unsqueeze(1)).float().argmax(1)
    if batch is not None:
        same_q, same_a = _same_segment(batch, "qa"), _same_segment(batch, "aq")
        right_too = same_a | (same_q & positive.unsqueeze(0))
        scores = scores.masked_fill(right_too[rows][:, columns], float("-inf"))
    loss = nn.functional.cross_entropy(scores, target)
    if symmetric:
        back = CONTRASTIVE_SCALE * v[rows] @ u[rows].T
        if batch is not None:
            back = back.masked_fill((same_q | same_a)[rows][:, rows], float("-inf"))
        loss = (loss + nn.functional.cross_entropy(back, torch.arange(len(rows), device=u.device))) / 2
    return loss


def _same_segment(batch: dict, order: str) -> torch.Tensor:
    """[pairs, pairs]: True where pair j (another pair) has the same first segment of `order` (the question
    for "qa", the answer for "aq") as pair i, compared on the tokens the towers read."""
    kept = batch[f"{order}_attention_mask"] * (batch[f"{order}_token_type_ids"] == 0)
    ids = (batch[f"{order}_input_ids"] + 1) * kept  # +1: a kept id 0 differs from padding
    same = (ids.unsqueeze(1) == ids.unsqueeze(0)).all(-1)
    return same & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)


def _check_resume_settings(last: Path, cfg: TrainConfig) -> None:
    stored = stored_train_config(last)
    if stored:  # runs recorded before the in-batch loss had these options ran without them
        stored = {**dict.fromkeys(IN_BATCH_OPTIONS, False), "freeze_embeddings": False, **stored}
        # older runs recorded paths as typed: compare them as a run records them now
        stored = {**stored, **{n: _recorded(n, stored[n]) for n in PATH_SETTINGS if n in stored}}
    differ = resume_differences(stored, asdict(cfg))
    if not differ:
        return
    detail = "; ".join(
        f"{name} is {given!r}, the checkpoint's run used {kept!r}" for name, (kept, given) in differ.items()
    )
    if not cfg.resume_override:
        raise TrainingError(
            f"resume: {detail}. Resume without these settings to continue the run as it "
            "was (they are read from the checkpoint), or pass --override to change them"
        )
    log.warning("resume with changed settings (--override): %s", detail)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
