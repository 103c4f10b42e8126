import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jetdeploy.config import DataConfig

MICRO = {"name": "micro", "jets_per_class": 3, "shard_size": 2, "max_particles": 32}


def micro_config(**overrides) -> DataConfig:
    return DataConfig.model_validate({**MICRO, **overrides})


@pytest.fixture(scope="session")
def micro_sample(tmp_path_factory) -> Path:
    """A small generated sample (15 jets), made once per test session with one worker."""
    from jetdeploy.data.generate import generate

    out = tmp_path_factory.mktemp("gen") / "micro.h5"
    generate(micro_config(), out, workers=1, progress=False)
    return out


# commands that start worker processes (a process pool or a Dask LocalCluster) or set per-process state (the
# edge bench sets ORT's and torch's denormal mode for the calling thread) run in a child process of their own
ISOLATED = {("data", "generate"), ("fpga", "sweep"), ("fpga", "study"), ("edge", "bench")}


def run_cli(*args: str, cwd=None, isolated: bool | None = None) -> subprocess.CompletedProcess:
    """`jetdeploy ARGS`: its exit status and what it printed. In this process (jetdeploy.cli.main, stdout and stderr
    captured: the imports are paid once per test worker) unless the command is ISOLATED (or `isolated`), which
    runs the installed console script in a child process."""
    if isolated or (isolated is None and tuple(args[:2]) in ISOLATED):
        exe = shutil.which("jetdeploy", path=str(Path(sys.executable).parent))
        return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    import contextlib
    import io
    import os
    import random

    import numpy as np
    import torch

    from jetdeploy.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    # what a command may change in this process is put back: cwd, the environment, torch's threads, the RNGs
    env, threads = dict(os.environ), torch.get_num_threads()
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if cwd is not None:
                os.chdir(cwd)
            try:
                code = main(list(args))
            except SystemExit as e:   # argparse: --help (0) and usage errors (2); sys.exit("text"): 1, as Python does
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(threads)
        random.setstate(rng[0]), np.random.set_state(rng[1]), torch.set_rng_state(rng[2])
    return subprocess.CompletedProcess(["jetdeploy", *args], code, out.getvalue(), err.getvalue())


def synthetic_jets(n: int = 400, P: int = 16, seed: int = 0, class_names=None, config_hash: str = "synthetic"):
    """A schema-valid jet file's contents whose classes differ in their particle features and
    observables (learnable in a few epochs): for fast training tests without Pythia."""
    import numpy as np

    from jetdeploy.data.schema import CLASS_NAMES, JetData, assign_split

    names = tuple(class_names or CLASS_NAMES)
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % len(names)).astype(np.int32)
    counts = rng.integers(4, P + 1, n)
    mask = np.arange(P)[None, :] < counts[:, None]
    shift = (labels[:, None, None] - 2) * 1.0
    feats = rng.normal(size=(n, P, 7)) + shift * np.array([1, 0.5, -1, 0, 0.3, -0.3, 0.2])
    p4 = np.abs(rng.normal(size=(n, P, 4))) * 10
    p4[..., 3] += 40
    obs = rng.normal(size=(n, 14)) + (labels[:, None] - 2) * 0.5
    return JetData(
        particle_features=np.where(mask[..., None], feats, 0).astype(np.float32),
        p4=np.where(mask[..., None], p4, 0).astype(np.float32),
        charge=np.zeros((n, P), np.int8), pdgid=np.where(mask, 211, 0).astype(np.int32), mask=mask,
        observables=obs.astype(np.float32), truth_pdgid=np.zeros(n, np.int32), labels=labels,
        split=assign_split(n, (0.6, 0.2, 0.2), seed), class_names=names, provenance={"synthetic": True},
        config_hash=config_hash,
    )


@pytest.fixture(scope="session")
def synth_file(tmp_path_factory) -> Path:
    from jetdeploy.data.schema import write_jets

    path = tmp_path_factory.mktemp("synth") / "synth.h5"
    write_jets(path, synthetic_jets())
    return path


def tiny_train_config(**sections):
    """The default preset shrunk for tests; `sections` are dotted overrides like {'quant.scheme': 'float'}."""
    from jetdeploy.config import load_train_config

    base = {"train.epochs": 3, "train.batch_size": 32, "train.warmup_epochs": 0.5, "model.dim": 8,
            "model.ffn_dim": 16, "model.head_hidden": [8], "train.threads": 1}
    base.update(sections)
    import yaml

    return load_train_config("default", [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                                         for k, v in base.items()])


def sine_onnx(path: Path) -> Path:
    """A one-node ONNX graph with an op no FPGA path supports: Sin, named 'my_sine'."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Sin", ["x"], ["y"], name="my_sine")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g), str(path))
    return path


@pytest.fixture(scope="module")
def tiny_fpga_transformer(synth_file, tmp_path_factory):
    """A tiny fixed-point (fpga) transformer run: 4 particles, 2 heads (the Keras twin tests' model)."""
    from jetdeploy.train.trainer import train

    run = tmp_path_factory.mktemp("twin-run") / "fpga"
    cfg = tiny_train_config(**{"quant.scheme": "fpga", "quant.weight_bits": 5, "quant.act_bits": 7,
                               "model.n_particles": 4, "model.dim": 4, "model.heads": 2, "model.ffn_dim": 8,
                               "model.head_hidden": [4], "train.epochs": 1, "train.batch_size": 16})
    train(cfg, synth_file, run, progress=False)
    return run


@pytest.fixture(scope="module")
def tiny_sigmoid_transformer(synth_file, tmp_path_factory):
    """fpga16l's recipe in miniature: one block, sigmoid attention, no norm, truncating activations."""
    from jetdeploy.train.trainer import train

    run = tmp_path_factory.mktemp("twin-sigmoid") / "fpga"
    cfg = tiny_train_config(**{"quant.scheme": "fpga", "quant.weight_bits": 5, "quant.act_bits": 7,
                               "quant.act_rounding": "floor", "model.attention": "sigmoid", "model.norm": "none",
                               "model.pooling": "sum", "model.blocks": 1, "model.n_particles": 8, "model.dim": 4,
                               "model.heads": 2, "model.ffn_dim": 8, "model.head_hidden": [4], "train.epochs": 1,
                               "train.batch_size": 16})
    train(cfg, synth_file, run, progress=False)
    return run


def keras_accuracy(out, run, data, n: int) -> float:
    """The saved model's test accuracy recomputed here: model.keras on its test_inputs.npy (the first test jets)
    against the labels read from the data file."""
    import numpy as np

    from jetdeploy.fpga.keras import stage as kerasflow
    from jetdeploy.train import checkpoint as ckpt
    from jetdeploy.train.dataset import load_inputs

    x = np.load(out / "test_inputs.npy")
    assert len(x) >= n
    _, rec = ckpt.load_model(run)
    labels = load_inputs(data, rec["config"].model, "test", n).labels.numpy()
    logits = np.asarray(kerasflow.load_keras(out / "model.keras").predict(x[:n], verbose=0))
    return float(np.mean(logits.argmax(1) == labels))
