"""Learned Token Pruning (Kim et al., KDD 2022) for a trained float tagger.

Stage 1 (soft): every token carries a mask m in [0, 1]. After block l's attention a token's importance s (attention
received, 1.0 = an average share; see tokens.received_attention) gives m <- m * sigmoid((s - theta_l) / T).
The mask enters the next blocks as a key bias log(m) and the pooling as a weight (with "carry"
pooling, a token's state is counted with the mask it loses at each step). Loss = cross-entropy +
lambda x the mean kept fraction; theta_l and the model's weights are trained together.
Stage 2 (hard): the thresholds are frozen and the model is fine-tuned with real pruning (the
PrunedTagger of inference), so training sees exactly what deployment does.

`select: hardest` replaces the learned selection with the hardest-particle rule (prune.py): each cap keeps a
jet's first tokens in input order (pT-sorted), and the model is fine-tuned under it (stage 2 only: there is no
threshold to learn). The pruning steps are the blocks where the cap shrinks. It reads no attention, so its graph
adds the fewest nodes: the learned selection has to beat it.

Optional distillation (`distill` > 0, as DynamicViT does for its token pruning): the unpruned source model,
frozen, is the teacher; the loss becomes (1 - a) CE + a T^2 KL(teacher / T || student / T) in both stages.

Writes RUN/edge/ltp.pt (fine-tuned weights + thresholds, loadable with weights_only=True) and
RUN/edge/ltp.json (history: loss, accuracy, kept fraction, thresholds per epoch), or both into another folder
(`out_dir`), so that several operating points of one run sit side by side without copies of the run.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tqdm import tqdm

from ..errors import JetDeployError
from ..io import write_json
from ..versions import packages
from ..runfolder import RunFolder
from ..train import checkpoint as ckpt
from ..train.dataset import load_inputs
from .prune import PrunedTagger, PruneSpec, check_blocks
from .tokens import key_bias_of, pt_ordered, received_attention

LTP_FORMAT = "jetdeploy-ltp-1"


class LTPConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lam: float = Field(0.1, ge=0.0, description="weight of the kept-fraction penalty")
    temperature: float = Field(0.05, gt=0.0)
    soft_epochs: int = Field(2, ge=0, description="0: no soft stage, the thresholds stay at 0 and the caps (budget) decide")
    hard_epochs: int = Field(2, ge=0)
    lr: float = Field(2e-4, gt=0.0)
    threshold_lr: float = Field(2e-2, gt=0.0)
    batch_size: int = Field(256, ge=8)
    max_train_jets: int | None = Field(None, ge=1)
    max_val_jets: int | None = Field(None, ge=1, description="score each epoch on this many val jets (none: all)")
    keep_epoch: Literal["best", "last"] = Field("best", description="the weights and thresholds saved: the epoch with "
                                                "the best val accuracy (the first of equals), or the last")
    budget: list[float] | None = Field(None, description="token budget cap per block (PruneSpec.keep); none: no cap")
    at: list[int] | None = Field(None, description="the blocks with a pruning step (PruneSpec.at); none: every block")

    @field_validator("at")
    @classmethod
    def _at(cls, v: list[int] | None) -> list[int] | None:
        return check_blocks(v)
    distill: float = Field(0.0, ge=0.0, le=1.0, description="weight a of the distillation loss from the unpruned model")
    distill_temperature: float = Field(2.0, gt=0.0, description="distillation temperature T")
    pool: Literal["carry", "entry", "fuse"] = Field(
        "carry", description="what a pruned token adds to the pooled sum: its state after its pruning block's attention "
        "(carry) or the state it entered that block with (entry: the block computes attention rows of kept tokens "
        "only); fuse: entry, and the pruned tokens' mean entry state goes on as one more token (one pruning step only; "
        "the soft stage trains without it)")
    select: Literal["attention", "hardest"] = Field(
        "attention", description="attention: LTP's learned thresholds on the attention received; hardest: each "
        "cap keeps the jet's hardest particles (input order), fine-tuned (no soft stage)")
    seed: int = 0

    @model_validator(mode="after")
    def _hardest(self) -> "LTPConfig":
        if self.select == "hardest" and (self.soft_epochs or self.at is not None or not self.budget):
            raise ValueError("select hardest has no thresholds to learn: give soft_epochs 0, a budget (the caps; "
                             "the steps are where a cap shrinks) and no 'at'")
        return self

    def spec(self, n_blocks: int) -> PruneSpec:
        """The PruneSpec of the pruned model this config trains."""
        return PruneSpec(method="ltp" if self.select == "attention" else "hardest",
                         keep=self.budget or [1.0] * n_blocks, pool=self.pool, at=self.at)


def soft_forward(pt: PrunedTagger, x: torch.Tensor, mask: torch.Tensor, temperature: float, *p4: torch.Tensor):
    """Logits and the mean kept fraction (over pruning steps and jets) with soft masks, no compaction.
    p4: the four-vectors of a pair-bias model (its U_ij is added to every block's scores)."""
    m = pt.model
    h, mask = m.tokens(x, mask)
    pair = m.pair(p4[0]) if p4 else None
    real = mask.to(h.dtype)
    n_real = real.sum(1).clamp(min=1)
    soft, carried, kept = real, torch.zeros(h.shape[0], h.shape[2], dtype=h.dtype), []
    bias = key_bias_of(mask, h.dtype)
    entry = pt.spec.pool in ("entry", "fuse")  # fuse: no fused token in the soft stage
    for i, block in enumerate(m.blocks):
        kb = bias + torch.log(soft.clamp(min=1e-6))[:, None, None, :]
        h_in = h
        h, probs = block.attend(h, mask, kb, pair)
        if not pt.steps[i]:  # no pruning step in this block (LTPConfig.at)
            h = block.feed_forward(h, mask)
            continue
        s = received_attention(probs, soft)
        new = soft * torch.sigmoid((s - pt.thresholds[i]) / temperature)
        carried = carried + (m.norm(h_in if entry else h, mask) * (soft - new)[..., None]).sum(1)
        soft = new
        kept.append(soft.sum(1) / n_real)
        h = block.feed_forward(h, mask)
    total = (m.norm(h, mask) * soft[..., None]).sum(1) + carried
    return m.classify(total / n_real[:, None]), torch.stack(kept).mean()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, weight: float,
                      temperature: float) -> torch.Tensor:
    """(1 - a) CE(student, labels) + a T^2 KL(softmax(teacher / T) || softmax(student / T)) (Hinton et al.)."""
    ce = F.cross_entropy(student, labels)
    if weight == 0.0:
        return ce
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True,
                  reduction="batchmean")
    return (1.0 - weight) * ce + weight * t * t * kl


def kept_fraction(counts: list[torch.Tensor]) -> tuple[float, float]:
    """(tokens kept after the pruning steps, real tokens x steps) of one call's PrunedTagger.last_counts."""
    if len(counts) < 2:
        return 0.0, 0.0
    return float(sum(c.sum() for c in counts[1:])), float(counts[0].sum()) * (len(counts) - 1)


@torch.no_grad()
def _evaluate(pt: PrunedTagger, inp, batch: int = 1000) -> dict:
    pt.eval()
    correct, kept, real = 0, 0.0, 0.0
    for i in range(0, len(inp), batch):
        args, y = inp.batch(torch.arange(i, min(i + batch, len(inp))))
        correct += int((pt(*args).argmax(1) == y).sum())
        k, r = kept_fraction(pt.last_counts)
        kept, real = kept + k, real + r
    return {"accuracy": correct / len(inp), "kept_fraction": kept / real if real else 1.0}


def ltp_paths(run_dir: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(ltp.pt, ltp.json) that `train_ltp` writes: in RUN/edge/, or in out_dir (refused, naming it, where out_dir or a
    folder above it is a file)."""
    if out_dir is None:
        rf = RunFolder(run_dir)
        return rf.ltp_pt, rf.ltp_json
    out = Path(out_dir)
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise JetDeployError(f"--out {out}: {existing} is a file, not a folder; give a folder for ltp.pt and ltp.json")
    return out / "ltp.pt", out / "ltp.json"


def _epoch(pt, teacher, opt, train_in, cfg: LTPConfig, epoch: int, epochs: int, hard: bool, progress: bool):
    """One LTP epoch over the training jets in a seeded order, the learning rate on a cosine over both stages:
    (sum of the batch losses, sum of the soft kept fractions)."""
    n, bs = len(train_in), cfg.batch_size
    steps = math.ceil(n / bs)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
    bar = tqdm(range(steps), desc=f"ltp {'hard' if hard else 'soft'} {epoch + 1}", disable=(not progress) or None,
               leave=False, unit="batch")
    loss_sum, kept_sum = 0.0, 0.0
    for i in bar:
        for g in opt.param_groups:  # cosine decay over both stages
            g["lr"] = 0.5 * g["base"] * (1 + math.cos(math.pi * (epoch * steps + i) / (epochs * steps)))
        idx = order[i * bs:(i + 1) * bs]
        args, y = train_in.batch(idx)  # x, mask (and p4 for a pair-bias model)
        if teacher is not None:
            with torch.no_grad():
                target = teacher(*args)
        if hard:
            logits, kept = pt(*args), torch.tensor(0.0)
        else:
            logits, kept = soft_forward(pt, args[0], args[1], cfg.temperature, *args[2:])
        loss = (F.cross_entropy(logits, y) if teacher is None else
                distillation_loss(logits, target, y, cfg.distill, cfg.distill_temperature))
        if not hard:
            loss = loss + cfg.lam * kept
        if not torch.isfinite(loss):
            raise JetDeployError(f"LTP: loss is {loss.item()} at epoch {epoch + 1}, step {i}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum, kept_sum = loss_sum + loss.item(), kept_sum + float(kept.detach())
    return loss_sum, kept_sum


def train_ltp(run_dir: str | Path, data: str | Path, cfg: LTPConfig, progress: bool = True,
              out_dir: str | Path | None = None) -> dict:
    """Fine-tune the float run `run_dir` with LTP (module docstring); writes ltp.pt and ltp.json (`ltp_paths`)."""
    run = Path(run_dir)
    pt_path, json_path = ltp_paths(run, out_dir)  # a bad --out fails before any training
    model, rec = ckpt.load_model(run)
    tcfg = rec["config"]
    if tcfg.quant.scheme != "float":
        raise JetDeployError(f"{run}: LTP fine-tunes a float run (this one is '{tcfg.quant.scheme}')")
    torch.manual_seed(cfg.seed)
    teacher = None
    if cfg.distill > 0:
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    train_in = load_inputs(data, tcfg.model, "train", cfg.max_train_jets)
    val_in = load_inputs(data, tcfg.model, "val", cfg.max_val_jets)
    if cfg.select == "hardest" and not pt_ordered(train_in.x, train_in.mask, list(tcfg.model.features)):
        raise JetDeployError(f"{data}: --select hardest keeps each jet's first particles, but the training jets are "
                             "not confirmed hardest first (no pT feature in model.features, or a later particle is "
                             "harder than an earlier one); sort the particles by pT or use --select attention")
    n_steps = len(model.blocks)
    pt = PrunedTagger(model, cfg.spec(n_steps), thresholds=torch.zeros(n_steps))
    theta = torch.nn.Parameter(torch.zeros(n_steps))
    pt.thresholds = theta
    base = _evaluate(PrunedTagger(model, PruneSpec(method="none")), val_in)
    say = print if progress else (lambda *a, **k: None)
    say(f"unpruned: val accuracy {base['accuracy']:.4f}")
    history, t0, best = [], time.perf_counter(), None  # best: (val accuracy, epoch, weights, thresholds) kept
    epochs = cfg.soft_epochs + cfg.hard_epochs
    steps = math.ceil(len(train_in) / cfg.batch_size)
    opt = torch.optim.Adam([{"params": list(model.parameters()), "lr": cfg.lr, "base": cfg.lr},
                            {"params": [theta], "lr": cfg.threshold_lr, "base": cfg.threshold_lr}])
    for epoch in range(epochs):
        hard = epoch >= cfg.soft_epochs
        theta.requires_grad_(not hard)
        model.train()
        loss_sum, kept_sum = _epoch(pt, teacher, opt, train_in, cfg, epoch, epochs, hard, progress)
        ev = _evaluate(pt, val_in)
        row = {"epoch": epoch + 1, "stage": "hard" if hard else "soft", "train_loss": loss_sum / steps,
               "soft_kept_fraction": None if hard else kept_sum / steps, "val_accuracy": ev["accuracy"],
               "val_kept_fraction": ev["kept_fraction"], "thresholds": theta.detach().tolist(),
               "elapsed_s": time.perf_counter() - t0}
        history.append(row)
        if cfg.keep_epoch == "last":  # the model as it ends: nothing to copy
            best = (ev["accuracy"], epoch + 1, None, None)
        elif best is None or ev["accuracy"] > best[0]:
            best = (ev["accuracy"], epoch + 1, copy.deepcopy(model.state_dict()), theta.detach().clone())
        say(f"ltp epoch {epoch + 1} ({row['stage']}): val accuracy {ev['accuracy']:.4f}, "
            f"kept {ev['kept_fraction']:.3f} of the real tokens per pruned block, thresholds "
            f"{[round(t, 3) for t in row['thresholds']]}")
    model.eval()
    if best is not None and best[2] is not None:  # the best epoch's weights and thresholds
        model.load_state_dict(best[2])
        with torch.no_grad():
            theta.copy_(best[3])
    if best is not None:
        say(f"kept epoch {best[1]} ({cfg.keep_epoch}): val accuracy {best[0]:.4f}")
    if not history:  # no epochs: the caps alone (thresholds 0), scored as they are
        ev = _evaluate(pt, val_in)
        history.append({"epoch": 0, "stage": "caps", "train_loss": None, "soft_kept_fraction": None,
                        "val_accuracy": ev["accuracy"], "val_kept_fraction": ev["kept_fraction"],
                        "thresholds": theta.detach().tolist(), "elapsed_s": time.perf_counter() - t0})
    pt_path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save({"format": LTP_FORMAT, "source_config_hash": rec["config_hash"], "ltp": cfg.model_dump(),
               "thresholds": theta.detach().clone(), "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}},
              pt_path)
    summary = {"source_run": str(run), "source_config_hash": rec["config_hash"], "config": cfg.model_dump(),
               "unpruned_val_accuracy": base["accuracy"], "n_val_jets": len(val_in), "history": history,
               "kept_epoch": best[1] if best is not None else 0,
               "val_accuracy": best[0] if best is not None else history[-1]["val_accuracy"],
               "thresholds": theta.detach().tolist(),
               "train_s": time.perf_counter() - t0, "tools": packages("torch")}
    write_json(json_path, summary)
    return summary


def load_ltp(run_dir: str | Path, path: str | Path | None = None) -> PrunedTagger:
    """The LTP-pruned model of RUN/edge/ltp.pt, or of another ltp.pt trained on a copy of the same run
    (`path`; its source config must be the run's). Eval mode."""
    run = Path(run_dir)
    path = Path(path) if path is not None else RunFolder(run).ltp_pt
    if not path.exists():
        raise JetDeployError(f"{path}: missing; train the LTP thresholds first (jetdeploy edge ltp --run {run})")
    rec = ckpt.load(path)
    if rec.get("format") != LTP_FORMAT:
        raise JetDeployError(f"{path}: format {rec.get('format')!r}, expected {LTP_FORMAT!r}")
    model, src = ckpt.load_model(run)
    if src["config_hash"] != rec["source_config_hash"]:
        raise JetDeployError(f"{path}: made from another model (config {rec['source_config_hash']}, the run now has "
                             f"{src['config_hash']}); run `jetdeploy edge ltp` again")
    ckpt.load_state(model, rec["state_dict"], str(path))
    model.eval()
    lcfg = LTPConfig.model_validate(rec["ltp"])
    spec = lcfg.spec(len(model.blocks))
    return PrunedTagger(model, spec, thresholds=rec["thresholds"] if spec.method == "ltp" else None).eval()
