"""Training: config-driven, seeded, checkpointed every epoch, resumable, with early stopping.

The learning rate is a pure function of the global step (linear warm-up, then cosine), and the
batch order of epoch e is a permutation seeded by (seed, e); with the RNG state saved in the
checkpoint, a resumed run makes exactly the same updates as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from ..config import TrainConfig
from ..data.schema import read_jets
from ..errors import JetDeployError
from ..io import atomic_path, write_json
from ..runfolder import RunFolder
from ..versions import packages
from . import checkpoint as ckpt
from .dataset import Inputs, input_stats, load_inputs


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    o = cfg.train
    warm = int(o.warmup_epochs * steps_per_epoch)
    if step < warm:
        return o.lr * (step + 1) / warm
    if o.schedule == "constant":
        return o.lr
    total = max(o.epochs * steps_per_epoch - warm, 1)
    return 0.5 * o.lr * (1 + math.cos(math.pi * min(step - warm, total) / total))


@torch.no_grad()
def predict(model: nn.Module, inp: Inputs, batch_size: int = 1024) -> torch.Tensor:
    """Logits for every jet of `inp` (eval mode)."""
    model.eval()
    out = []
    for start in range(0, len(inp), batch_size):
        args, _ = inp.batch(torch.arange(start, min(start + batch_size, len(inp))))
        out.append(model(*args).cpu())
    return torch.cat(out)


def _evaluate_loss(model: nn.Module, inp: Inputs) -> tuple[float, float]:
    logits = predict(model, inp)
    labels = inp.labels.cpu()
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on weight matrices only (not on biases, norms or learned quantizer scales)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "quant" not in name else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.train.lr)


def quant_stats_state(model: nn.Module) -> dict:
    """Brevitas' activation scales start from statistics gathered over the first training steps; that
    progress (a step counter and a running buffer) is not in state_dict, so resume saves it here."""
    from brevitas.core.scaling.standalone import ParameterFromRuntimeStatsScaling

    return {name: {"counter": int(m.counter), "buffer": m.buffer.detach().clone()}
            for name, m in model.named_modules() if isinstance(m, ParameterFromRuntimeStatsScaling)}


def set_quant_stats_state(model: nn.Module, saved: dict) -> None:
    from brevitas.core.scaling.standalone import ParameterFromRuntimeStatsScaling

    mods = {name: m for name, m in model.named_modules() if isinstance(m, ParameterFromRuntimeStatsScaling)}
    if set(mods) != set(saved):
        raise JetDeployError("checkpoint's quantizer statistics do not match the model's quantizers "
                             f"({len(saved)} saved, {len(mods)} in the model)")
    for name, m in mods.items():
        m.counter = saved[name]["counter"]
        m.buffer.copy_(saved[name]["buffer"])


def tool_versions() -> dict:
    return packages("torch", "brevitas", "numpy")


def _init_model(cfg: TrainConfig, train: Inputs, init_from: str | None) -> tuple[nn.Module, dict]:
    from ..models import build_model

    model = build_model(cfg.model, train.x.shape[-1], len(train.class_names), cfg.quant)
    info: dict = {}
    if init_from:
        from ..quant.model import load_float_weights

        float_model, rec = ckpt.load_model(init_from)
        fcfg = rec["config"]
        if fcfg.model != cfg.model:
            raise JetDeployError(
                f"{init_from}/model.pt: its model config differs from this one; QAT fine-tuning needs the same "
                f"architecture (float: {fcfg.model.model_dump()}, here: {cfg.model.model_dump()})"
            )
        if fcfg.quant.scheme != "float":
            raise JetDeployError(f"{init_from}/model.pt is a '{fcfg.quant.scheme}' model; init_from needs a float run")
        if list(rec["class_names"]) != list(train.class_names):
            raise JetDeployError(f"{init_from}: trained on classes {rec['class_names']}, data has {list(train.class_names)}")
        load_float_weights(model, float_model.state_dict())
        info = {"init_from": str(init_from), "init_config_hash": rec["config_hash"]}
    else:
        mean, std = input_stats(train)
        model.normalizer.mean.copy_(mean)
        model.normalizer.std.copy_(std)
    return model, info


def train(cfg: TrainConfig, data_path: str | os.PathLike, run_dir: str | os.PathLike, *, force: bool = False,
          stop_after: int | None = None, progress: bool = True, device: str = "cpu",
          time_limit_s: float | None = None) -> dict:
    """Train (or resume) the run in `run_dir`; returns the summary written to RUN/train.json."""
    run = Path(run_dir)
    chash = ckpt.config_hash(cfg)
    rf = RunFolder(run)
    state_path, model_path, summary_path = rf.checkpoint_pt, rf.model_pt, rf.train_json
    state = None if force else _saved_state(state_path, chash)
    if state is not None and state.get("finished") and summary_path.exists():
        return {"up_to_date": True, "config_hash": chash}
    torch.manual_seed(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    train_in, val_in, data_hash = _load_splits(cfg, data_path, state, state_path)
    init_from = cfg.quant.init_from
    model, init_info = _init_model(cfg, train_in, init_from if state is None else None)
    if device != "cpu":  # an accelerator: the whole split moves once; results are not bit-identical to CPU
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise JetDeployError(f"--device {device}: no CUDA device is available to torch")
        model.to(device)
        train_in, val_in = train_in.to(device), val_in.to(device)
    opt = make_optimizer(model, cfg)
    history: list[dict] = []
    start_epoch, best, bad, best_epoch, train_s = 0, math.inf, 0, -1, 0.0
    if state is not None:
        ckpt.load_state(model, state["model"], str(state_path))
        model.to(device)
        opt.load_state_dict(state["optim"])
        torch.set_rng_state(state["rng"])
        set_quant_stats_state(model, state.get("quant_stats", {}))
        history, start_epoch, best, bad = state["history"], state["epoch"], state["best_val_loss"], state["bad_epochs"]
        best_epoch, train_s, init_info = state["best_epoch"], state["train_s"], state["init"]
    else:
        run.mkdir(parents=True, exist_ok=True)
        with atomic_path(run / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    n = len(train_in)
    stopped_early, epochs_this_call, call_t0 = False, 0, time.perf_counter()
    for epoch in range(start_epoch, cfg.train.epochs):
        if stop_after is not None and epochs_this_call >= stop_after:
            break
        if time_limit_s is not None and time.perf_counter() - call_t0 > time_limit_s:
            break
        if bad >= cfg.train.patience:
            stopped_early = True
            break
        loss_sum, correct, epoch_s = _train_epoch(model, opt, train_in, cfg, epoch, device, progress)
        train_s += epoch_s
        val_loss, val_acc = _evaluate_loss(model, val_in)
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n, "val_loss": val_loss,
               "val_acc": val_acc, "lr_end": opt.param_groups[0]["lr"], "train_s": epoch_s,
               "train_jets_per_s": n / epoch_s}
        history.append(rec)
        if progress:
            print(f"epoch {epoch + 1:3d}: train loss {rec['train_loss']:.4f} acc {rec['train_acc']:.4f} | "
                  f"val loss {val_loss:.4f} acc {val_acc:.4f} | {rec['train_jets_per_s']:.0f} jets/s")
        if val_loss < best - 1e-6:
            best, bad, best_epoch = val_loss, 0, epoch + 1
            ckpt.save(ckpt.model_record(model, cfg, train_in.class_names, train_in.input_names, data_hash, epoch + 1),
                      model_path)
        else:
            bad += 1
        epochs_this_call += 1
        done = epoch + 1 >= cfg.train.epochs or bad >= cfg.train.patience
        ckpt.save({"config_hash": chash, "data_hash": data_hash, "epoch": epoch + 1, "model": model.state_dict(),
                   "optim": opt.state_dict(), "rng": torch.get_rng_state(), "quant_stats": quant_stats_state(model), "history": history,
                   "best_val_loss": best, "bad_epochs": bad, "best_epoch": best_epoch, "train_s": train_s,
                   "init": init_info, "finished": done}, state_path)
        if done:
            stopped_early = bad >= cfg.train.patience and epoch + 1 < cfg.train.epochs
            break

    summary = _summary(cfg, chash, data_path, data_hash, train_in, val_in, model, history, best, best_epoch,
                       stopped_early, bad, train_s, device, init_info)
    write_json(summary_path, summary)
    _plot_history(history, run / "history.png", cfg.name)
    return summary


def _load_splits(cfg: TrainConfig, data_path, state: dict | None, state_path: Path):
    """(train inputs, val inputs, the data file's config hash); a resumed run must see the same data."""
    data = read_jets(data_path)
    train_in = load_inputs(data_path, cfg.model, "train", cfg.train.max_train_jets, data=data)
    val_in = load_inputs(data_path, cfg.model, "val", data=data)
    data_hash = data.config_hash or "unknown"
    del data
    if state is not None and state.get("data_hash") != data_hash:
        raise JetDeployError(f"{state_path}: this run was trained on other data (config hash {state.get('data_hash')}, "
                             f"{data_path} has {data_hash}); use a new --run folder or --force")
    return train_in, val_in, data_hash


def _saved_state(state_path: Path, chash: str) -> dict | None:
    """The checkpoint of an unfinished (or finished) run made with this config, or None."""
    if not state_path.exists():
        return None
    state = ckpt.load(state_path)
    if state.get("config_hash") != chash:
        raise JetDeployError(
            f"{state_path}: this run was trained with another config (hash {state.get('config_hash')}, "
            f"now {chash}); use a new --run folder, or --force to start this one again"
        )
    return state


def _summary(cfg, chash, data_path, data_hash, train_in, val_in, model, history, best, best_epoch, stopped_early,
             bad, train_s, device, init_info) -> dict:
    """RUN/train.json."""
    finished = bool(history) and (history[-1]["epoch"] >= cfg.train.epochs or stopped_early or bad >= cfg.train.patience)
    summary = {
        "ok": bool(history) and math.isfinite(best),
        "finished": finished,
        "up_to_date": False,
        "config_hash": chash,
        "config": cfg.model_dump(mode="json"),
        "data": {"file": str(data_path), "config_hash": data_hash, "n_train": len(train_in), "n_val": len(val_in),
                 "class_names": list(train_in.class_names), "inputs": list(train_in.input_names)},
        "n_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "best_val_loss": best,
        "best_val_acc": next((h["val_acc"] for h in history if h["epoch"] == best_epoch), None),
        "stopped_early": stopped_early,
        "train_jets_per_s": (sum(h["train_s"] * h["train_jets_per_s"] for h in history) / train_s) if train_s else None,
        "train_s": train_s,
        "threads": torch.get_num_threads(),
        "device": device if device == "cpu" else f"{device} ({torch.cuda.get_device_name(0)})",
        "init": init_info,
        "quant_layout": getattr(model, "layout", None),
        "history": history,
        "tools": tool_versions(),
    }
    return summary


def _train_epoch(model, opt, train_in, cfg: TrainConfig, epoch: int, device: str, progress: bool):
    """One epoch over the training jets in a seeded order: (summed loss, correct, seconds)."""
    n, bs = len(train_in), cfg.train.batch_size
    steps_per_epoch = math.ceil(n / bs)
    model.train()
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.train.seed * 100_003 + epoch)).to(device)
    bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=(not progress) or None,
               leave=False, unit="batch")
    t0, loss_sum, correct = time.perf_counter(), 0.0, 0
    for i in bar:
        step = epoch * steps_per_epoch + i
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step, steps_per_epoch)
        args, y = train_in.batch(order[i * bs:(i + 1) * bs])
        logits = model(*args)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise JetDeployError(f"training diverged: loss is {loss.item()} at epoch {epoch + 1}, step {i} "
                                 f"(lower train.lr, or check the inputs)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        if i % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return loss_sum, correct, time.perf_counter() - t0


def _plot_history(history: list[dict], path: Path, title: str) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="val")
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy"), a.legend()
    b.plot(ep, [h["train_acc"] for h in history], label="train")
    b.plot(ep, [h["val_acc"] for h in history], label="val")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy"), b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
