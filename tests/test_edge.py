"""edge: weighted PageRank, Zero-TPrune's S-stage, LTP training, pruned ONNX graphs == pruned torch."""

import json

import numpy as np
import pytest
import torch

from conftest import run_cli, tiny_train_config
from jetdeploy.config import ModelConfig
from jetdeploy.edge.bench import SingleJet, geometric_schedule, verify_pruned
from jetdeploy.settings import BenchSettings
from jetdeploy.edge.ltp import LTPConfig, load_ltp, train_ltp
from jetdeploy.edge.macs import macs_per_jet, padded_macs
from jetdeploy.edge.prune import PrunedTagger, PruneSpec
from jetdeploy.edge.tokens import (NEG, compact, gather_queries, gather_tokens, masked_sum, received_attention,
                                   weighted_pagerank)
from jetdeploy.errors import JetDeployError
from jetdeploy.export import graphs, ort
from jetdeploy.models.transformer import TransformerTagger
from jetdeploy.train import checkpoint as ckpt
from jetdeploy.train.trainer import train


def tagger(n_particles=8, blocks=2, dim=8, heads=2, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="transformer", n_particles=n_particles, features=["deta", "dphi", "log_pt_rel"], dim=dim,
                      heads=heads, blocks=blocks, ffn_dim=16, norm="layernorm", pooling="mean")
    return TransformerTagger(cfg, 3, 5).eval()


# ---- weighted PageRank ----------------------------------------------------------------------------
def test_wpr_stationary_distribution_of_hand_made_graphs():
    # every query attends with the same distribution p: p is stationary after one step
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    A = p.expand(4, 4)[None, None]
    s = weighted_pagerank(A, torch.ones(1, 4, dtype=torch.bool), 1)[0, 0]
    assert torch.allclose(s, p, atol=1e-6)
    # a two-state chain [[1-a, a], [b, 1-b]] converges to (b, a) / (a + b), whatever the start
    a, b = 0.2, 0.6
    A = torch.tensor([[1 - a, a], [b, 1 - b]])[None, None]
    s = weighted_pagerank(A, torch.ones(1, 2, dtype=torch.bool), 60)[0, 0]
    assert torch.allclose(s, torch.tensor([b, a]) / (a + b), atol=1e-5)
    # a cycle keeps the uniform distribution; importance is conserved
    A = torch.roll(torch.eye(3), 1, dims=1)[None, None]
    s = weighted_pagerank(A, torch.ones(1, 3, dtype=torch.bool), 7)[0, 0]
    assert torch.allclose(s, torch.full((3,), 1 / 3), atol=1e-6)


def test_wpr_padding_gets_no_importance():
    A = torch.softmax(torch.randn(1, 2, 5, 5), -1)
    mask = torch.tensor([[True, True, True, False, False]])
    A = A * mask[:, None, None, :]  # padded keys receive no attention (as with the -1e4 key bias)
    A = A / A.sum(-1, keepdim=True)
    s = weighted_pagerank(A, mask, 5)
    assert torch.all(s[..., 3:] == 0) and torch.allclose(s.sum(-1), torch.ones(1, 2))
    # unmasked call on the real tokens alone gives the same importance
    s_real = weighted_pagerank(A[:, :, :3, :3] / A[:, :, :3, :3].sum(-1, keepdim=True), None, 5)
    assert torch.allclose(s[..., :3], s_real, atol=1e-6)


# ---- Zero-TPrune S-stage -----------------------------------------------------------------------------
def _duplicate_setup():
    """8 tokens ranked by importance 0..7; tokens 4 and 5 duplicate tokens 0 and 1."""
    torch.manual_seed(3)
    h = torch.linalg.qr(torch.randn(8, 8))[0][:, :8].T[None].clone()  # orthonormal token states
    h[0, 4], h[0, 5] = h[0, 0] * 2.0, h[0, 1] * 0.5                     # same direction: cosine 1
    w = torch.tensor([8.0, 7, 6, 5, 4, 3, 2, 1])
    probs = (w / w.sum()).expand(8, 8)[None, None].expand(1, 2, 8, 8)
    return h, probs


def _kept(pt, h, probs):
    score, k = pt._select(0, h, probs, torch.ones(1, 8, dtype=torch.bool))
    batched = set(torch.topk(score, int(k), 1).indices[0].tolist())
    single = set(pt._select_single(0, h[0], probs[0]).tolist())  # one jet: no batch axis
    return batched, single


def test_s_stage_prunes_the_duplicate_tokens():
    model = tagger(n_particles=8)
    h, probs = _duplicate_setup()
    # budget 6 of 8: the I-stage alone drops the two least important tokens (6, 7) ...
    i_only = PrunedTagger(model, PruneSpec(method="zerotprune", keep=[0.75, 0.75], similarity_fraction=0.0))
    assert _kept(i_only, h, probs) == ({0, 1, 2, 3, 4, 5}, {0, 1, 2, 3, 4, 5})
    # ... the S-stage (all pruning by similarity) drops the duplicates 4 and 5 instead
    s_all = PrunedTagger(model, PruneSpec(method="zerotprune", keep=[0.75, 0.75], similarity_fraction=1.0))
    assert _kept(s_all, h, probs) == ({0, 1, 2, 3, 6, 7}, {0, 1, 2, 3, 6, 7})


def test_compact_keeps_the_best_tokens_and_masks_the_rest():
    score = torch.tensor([[0.1, 0.9, -1e9, 0.5], [-1e9, -1e9, 0.3, -1e9]])
    h = torch.arange(8.0).reshape(2, 4, 1)
    mask, hk, idx = compact(score, torch.tensor(2), h)
    assert mask.tolist() == [[True, True], [True, False]]
    assert hk[0, :, 0].tolist() == [1.0, 3.0] and hk[1, 0, 0].item() == 6.0


# ---- pruned torch == pruned ONNX ---------------------------------------------------------------------
def _jets(lengths, n_particles=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(n_particles)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.randn(len(lengths), n_particles, 3, generator=g) * mask[..., None]
    return x.numpy(), mask.numpy().astype(np.float32)


@pytest.mark.parametrize("spec", [PruneSpec(method="zerotprune", keep=[0.75, 0.5], similarity_fraction=0.5),
                                  PruneSpec(method="zerotprune", keep=[1.0, 0.25], similarity_fraction=0.0),
                                  PruneSpec(method="ltp", keep=[1.0, 0.75]),
                                  PruneSpec(method="ltp", keep=[0.75, 0.5], pool="entry"),
                                  PruneSpec(method="zerotprune", keep=[0.75, 0.5], pool="drop"),
                                  PruneSpec(method="hardest", keep=[0.75, 0.5]),
                                  PruneSpec(method="ltp", keep=[0.75, 0.75], pool="fuse", at=[0])],
                         ids=["ztp", "ztp-i", "ltp", "ltp-entry", "ztp-drop", "hardest", "ltp-fuse"])
def test_exported_pruned_graph_equals_torch(spec, tmp_path):
    model = tagger()
    pt = PrunedTagger(model, spec, thresholds=torch.tensor([0.9, 1.0]) if spec.method == "ltp" else None)
    batched, single = tmp_path / "b.onnx", tmp_path / "s.onnx"
    graphs.export_float(graphs.Deployable(pt).eval(), 3, 8, batched)
    graphs.export_float(SingleJet(pt).eval(), 3, 8, single, single=True)
    # batches of 3 jets of different lengths, including jets shorter than the budget (1 and 2 particles)
    x, mask = _jets([8, 5, 2, 1, 7, 3, 8, 6, 4])
    chk = verify_pruned(ort.ort_session(batched), ort.ort_session(single), pt, x, mask)
    assert chk["ok"] and chk["argmax_agreement"] == 1.0, chk
    assert chk["max_abs_diff_batch1"] < 1e-5 and chk["max_abs_diff_batch3"] < 1e-5
    # and the pruning really happened: fewer tokens than particles in the later blocks
    with torch.no_grad():
        pt(torch.from_numpy(x), torch.from_numpy(mask) > 0.5)
    assert pt.last_counts[0].tolist() == [8, 5, 2, 1, 7, 3, 8, 6, 4]
    assert int(pt.last_counts[-1].max()) < 8


def test_batch1_graphs_fold_their_shape_arithmetic(tmp_path):
    """The single-jet graph (batch fixed at 1) and the padded baseline's static [1, N] graph keep no Shape
    op where every size they reshape with is known, and still equal torch."""
    import onnx

    model = tagger()
    nopad = PrunedTagger(model, PruneSpec(method="none"))
    single, static, batched = tmp_path / "s.onnx", tmp_path / "st.onnx", tmp_path / "b.onnx"
    info = graphs.export_float(SingleJet(nopad).eval(), 3, 8, single, single=True)
    info_static = graphs.export_float(graphs.Deployable(model).eval(), 3, 8, static, static=True)
    graphs.export_float(graphs.Deployable(model).eval(), 3, 8, batched)
    ops = {p: [n.op_type for n in onnx.load(p).graph.node] for p in (single, static, batched)}
    assert info_static["simplifier"] and info["simplifier"]
    assert "Shape" not in ops[static]
    # the single-jet graph reads one size at run time: the particle count, nothing else (its tokens are a
    # 2-D [n, D] matrix, so no Linear has a Reshape around it and no batch size is read)
    assert ops[single].count("Shape") == 1 and ops[single].count("Reshape") <= 4 * len(model.blocks)
    from onnx import numpy_helper

    g = onnx.load(single).graph
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant"}
    consts.update({i.name: numpy_helper.to_array(i) for i in g.initializer})
    shapes = {n.output[0] for n in g.node if n.op_type == "Shape"}
    read = set()
    for n in g.node:
        if n.input and n.input[0] in shapes:
            assert n.op_type in ("Gather", "Slice"), n.op_type
            ix = np.ravel(consts[n.input[1]]) if n.op_type == "Gather" else \
                range(int(consts[n.input[1]][0]), int(consts[n.input[2]][0]))
            read |= {int(i) for i in ix}
    assert len(read) == 1, read
    assert "Shape" in ops[batched]  # dynamic batch and particles: the sizes are read at run time
    assert len(ops[single]) < len(ops[batched])
    x, mask = _jets([8, 5, 2, 1, 7, 3])
    chk = verify_pruned(ort.ort_session(batched), ort.ort_session(single), nopad, x, mask,
                        static=ort.ort_session(static))
    assert chk["ok"] and chk["max_abs_diff_static"] < 1e-5 and chk["max_abs_diff_batch1"] < 1e-5, chk
    with pytest.raises(JetDeployError, match="not both"):
        graphs.export_float(SingleJet(nopad).eval(), 3, 8, tmp_path / "x.onnx", single=True, static=True)


def test_short_jets_lose_nothing_under_the_budget_and_never_nan():
    model = tagger()
    pt = PrunedTagger(model, PruneSpec(method="zerotprune", keep=[0.5, 0.5], similarity_fraction=0.5))  # budget 4
    x, mask = _jets([1, 2, 4, 8])
    xt, mt = torch.from_numpy(x), torch.from_numpy(mask) > 0.5
    with torch.no_grad():
        out = pt(xt, mt)
        counts = [c.tolist() for c in pt.last_counts]
        plain = model(xt, mt)
    assert torch.isfinite(out).all()
    assert counts[1] == [1, 2, 4, 4]  # budget 4: only the 8-particle jet is pruned
    assert torch.allclose(out[:3], plain[:3], atol=1e-5)  # nothing pruned: identical to the unpruned tagger
    with torch.no_grad():  # one jet alone, with its real particles only, gives the batch's answer
        for i, n in enumerate([1, 2, 4, 8]):
            assert torch.allclose(pt(xt[i:i + 1, :n]), out[i:i + 1], atol=1e-5)


def test_hardest_control_keeps_the_first_particles_in_input_order():
    """The hardest-particle control: after block 0 (budget 4 of 8) the blocks see the first 4 particles, in order,
    whatever their attention; built by hand from the tagger's own blocks, batched and one jet at a time."""
    model = tagger()
    x, mask = _jets([8, 6, 3])
    xt, mt = torch.from_numpy(x), torch.from_numpy(mask) > 0.5
    pt = PrunedTagger(model, PruneSpec(method="hardest", keep=[0.5, 0.5], pool="drop"))
    with torch.no_grad():
        out = pt(xt, mt)
        h, m = model.tokens(xt, mt)
        kb = ((~m).float() * -1e4)[:, None, None, :]
        h, _ = model.blocks[0].attend(h, m, kb)
        h, m = h[:, :4], m[:, :4]  # the first four slots: jets 0 and 1 keep their 4 hardest, jet 2 its 3
        h = model.blocks[0].feed_forward(h, m)
        h = model.blocks[1](h, m, ((~m).float() * -1e4)[:, None, None, :])
        ref = model.classify(masked_sum(model.norm(h, m), m) / m.sum(1, keepdim=True))
        single = torch.cat([pt(xt[i:i + 1, :n]) for i, n in enumerate([8, 6, 3])])
        # a permutation of the particles changes the kept set: the control reads the input order, not the tokens
        perm = pt(xt[:1, [7, 6, 5, 4, 3, 2, 1, 0]], mt[:1])
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(single, out, atol=1e-5)
    assert [c.tolist() for c in pt.last_counts] == [[8], [4], [4]]  # the last call: jet 0 alone
    assert not torch.allclose(perm, out[:1], atol=1e-4)


def test_unpruned_and_carry_pooling_semantics():
    model = tagger()
    x, mask = _jets([8, 3, 6])
    xt, mt = torch.from_numpy(x), torch.from_numpy(mask) > 0.5
    with torch.no_grad():
        plain = model(xt, mt)
        assert torch.allclose(PrunedTagger(model, PruneSpec(method="none"))(xt, mt), plain, atol=1e-5)
        carry = PrunedTagger(model, PruneSpec(method="zerotprune", keep=[0.5, 0.5]))(xt, mt)
        drop = PrunedTagger(model, PruneSpec(method="zerotprune", keep=[0.5, 0.5], pool="drop"))(xt, mt)
    assert torch.allclose(carry[1], plain[1], atol=1e-5)  # 3 particles < budget 4: untouched
    assert not torch.allclose(carry[0], drop[0])          # the 8-particle jet: carried states count


def test_kept_rows_only_attention_equals_full_attention_then_pruning():
    """pool entry / drop: a pruning block computes probs x V and the output projection for its kept tokens
    only. Reference: the whole attention for every token, then the kept tokens gathered, with the pruned
    ones carrying the (final-norm) state they entered the block with."""
    model = tagger(blocks=2)
    theta = torch.tensor([0.95, 1.0])
    x, mask = _jets([8, 5, 2, 7, 1, 8])
    xt, mt = torch.from_numpy(x), torch.from_numpy(mask) > 0.5
    with torch.no_grad():
        got = {pool: PrunedTagger(model, PruneSpec(method="ltp", keep=[0.75, 0.5], pool=pool), thresholds=theta)
               for pool in ("entry", "drop", "carry")}
        out = {pool: pt(xt, mt) for pool, pt in got.items()}
        ref = got["entry"]
        h, m = model.tokens(xt, mt)
        n_real, carried = m.sum(1), 0.0
        for i, block in enumerate(model.blocks):
            h_in = h
            h, probs = block.attend(h, m, ((~m).float() * -1e4)[:, None, None, :])
            score, k = ref._select(i, h, probs, m)
            new_m, kept, kept_in, _ = compact(score, k, h, h_in)
            carried = carried + masked_sum(model.norm(h_in, m), m) - masked_sum(model.norm(kept_in, new_m), new_m)
            h, m = block.feed_forward(kept, new_m), new_m
        pooled = masked_sum(model.norm(h, m), m)
        want_entry = model.classify((pooled + carried) / n_real[:, None])
        want_drop = model.classify(pooled / m.sum(1)[:, None])
    assert torch.allclose(out["entry"], want_entry, atol=1e-5)
    assert torch.allclose(out["drop"], want_drop, atol=1e-5)
    assert [c.tolist() for c in got["entry"].last_counts] == [c.tolist() for c in got["carry"].last_counts]
    assert not torch.allclose(out["entry"], out["carry"])  # entering states differ from post-attention ones
    # the query-row gather
    probs = torch.randn(2, 3, 5, 4)
    idx = torch.tensor([[4, 0], [2, 2]])
    assert torch.equal(gather_queries(probs, idx), torch.stack([probs[b][:, idx[b]] for b in range(2)]))
    assert NEG < -1e8


def test_fused_token_is_the_mean_entry_state_of_the_pruned_tokens():
    """pool fuse: after the step, the kept tokens go on with one more token, the mean of the states the pruned
    tokens entered the block with (zero for a jet that loses none); it is attended to, not pooled. Reference: the
    same model run by hand, jet by jet, on the tokens the entry-pooled twin keeps."""
    model = tagger(blocks=2)
    theta = torch.tensor([0.95, 1.0])
    x, mask = _jets([8, 5, 2, 7, 1, 8])
    xt, mt = torch.from_numpy(x), torch.from_numpy(mask) > 0.5
    spec = dict(method="ltp", keep=[0.5, 0.5], at=[0])
    fuse = PrunedTagger(model, PruneSpec(pool="fuse", **spec), thresholds=theta)
    entry = PrunedTagger(model, PruneSpec(pool="entry", **spec), thresholds=theta)
    with torch.no_grad():
        got = fuse(xt, mt)
        want = []
        for b in range(len(x)):
            n = int(mt[b].sum())
            h, _ = model.tokens(xt[b:b + 1, :n], None)
            h = h[0]
            a, probs, v = model.blocks[0].attention_probs(h, None, None)
            idx = entry._select_single(0, h, probs)
            pruned = torch.ones(n, dtype=torch.bool)
            pruned[idx] = False
            fused = h[pruned].mean(0) if pruned.any() else torch.zeros(h.shape[1])
            nh = model.norm(h, None)
            carried = nh[pruned].sum(0)
            h = model.blocks[0].attend_rows(h[idx], None, probs[:, idx], v)
            h = torch.cat([h, fused[None]], 0)
            h = model.blocks[0].feed_forward(h, None)
            h = model.blocks[1](h[None], None, None)[0]
            pooled = model.norm(h[:-1], None).sum(0) + carried
            want.append(model.classify((pooled / n)[None])[0])
    assert torch.allclose(got, torch.stack(want), atol=1e-5)
    assert not torch.allclose(got, entry(xt, mt), atol=1e-4)  # the fused token changes the result
    # the fused token is computed by the later blocks, so it is counted: kept + 1 (a 1-particle jet keeps 1, fuses 0)
    assert (fuse.last_counts[1] == entry.last_counts[1] + 1).all()
    assert fuse.last_counts[1].tolist()[4] == 2
    with pytest.raises(JetDeployError, match="one pruning step"):
        PrunedTagger(model, PruneSpec(method="ltp", keep=[0.5, 0.5], pool="fuse"), thresholds=theta)


def test_macs_follow_the_kept_tokens():
    model = tagger()
    full = padded_macs(model, 8)
    counts = [torch.tensor([8]), torch.tensor([4]), torch.tensor([2])]
    assert macs_per_jet(model, counts)[0] < full
    assert macs_per_jet(model, [torch.tensor([8])])[0] == pytest.approx(full)
    # kept rows only: block 0 saves (8 - 4) x (d^2 + 8 d) of its 8 queries' output work, block 1 (4 - 2) x (d^2 + 4 d)
    d = model.cfg.dim
    saved = macs_per_jet(model, counts)[0] - macs_per_jet(model, counts, kept_rows_only=True)[0]
    assert saved == pytest.approx(4 * (d * d + 8 * d) + 2 * (d * d + 4 * d))
    assert macs_per_jet(model, [torch.tensor([8])], kept_rows_only=True)[0] == pytest.approx(full)
    assert geometric_schedule(0.25, 2) == [0.5, 0.25]


def test_pruning_errors_are_clear():
    model = tagger()
    with pytest.raises(JetDeployError, match="keep has 3 entries"):
        PrunedTagger(model, PruneSpec(method="zerotprune", keep=[0.9, 0.8, 0.7]))
    with pytest.raises(JetDeployError, match="LTP needs 2 learned thresholds"):
        PrunedTagger(model, PruneSpec(method="ltp", keep=[1.0, 1.0]))
    with pytest.raises(ValueError, match="non-increasing"):
        PruneSpec(keep=[0.5, 0.8])
    cls_cfg = model.cfg.model_copy(update={"pooling": "cls"})
    with pytest.raises(JetDeployError, match="pooling"):
        PrunedTagger(TransformerTagger(cls_cfg, 3, 5), PruneSpec(method="zerotprune", keep=[1.0, 0.5]))
    with pytest.raises(JetDeployError, match="one jet"):  # no mask: a single jet only
        PrunedTagger(model, PruneSpec(method="zerotprune", keep=[1.0, 0.5]))(torch.zeros(2, 8, 3))


def test_received_attention_is_one_for_uniform_attention():
    probs = torch.full((1, 2, 4, 4), 0.25)
    assert torch.allclose(received_attention(probs, torch.ones(1, 4)), torch.ones(1, 4))


def test_received_attention_weights_the_queries():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(3, 4, 6, 6), -1)
    w = (torch.rand(3, 6) > 0.4).float()
    ref = torch.einsum("bhqk,bq->bk", probs, w) / 4            # mean over heads, weighted sum over queries
    assert torch.allclose(received_attention(probs, w), ref, atol=1e-6)


def test_row_gather_and_masked_sum_match_the_reference():
    torch.manual_seed(1)
    t = torch.randn(3, 7, 5)
    idx = torch.tensor([[6, 0, 2], [1, 1, 3], [4, 5, 6]])
    assert torch.equal(gather_tokens(t, idx), torch.gather(t, 1, idx[..., None].expand(-1, -1, 5)))
    assert torch.equal(gather_tokens(t[..., 0], idx), torch.gather(t[..., 0], 1, idx))
    w = torch.rand(3, 7) > 0.5
    assert torch.allclose(masked_sum(t, w), (t * w[..., None]).sum(1), atol=1e-6)


def test_denormal_flushing_of_the_bench_sessions(tmp_path):
    """x * 2 on a float32 denormal in ORT: kept in the CPU's default mode, zero in the mode the edge bench
    times with (the session option for ORT's threads, torch.set_flush_denormal for the calling thread)."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                          [helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])])
    path = tmp_path / "mul.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.full(4, 1e-40, dtype=np.float32)                       # below float32's smallest normal (1.2e-38)
    s = ort.ort_session(path, denormal_as_zero=True)
    assert s.get_session_options().get_session_config_entry("session.set_denormal_as_zero") == "1"
    try:
        torch.set_flush_denormal(True)
        flushed = s.run(None, {"x": x})[0]
    finally:
        torch.set_flush_denormal(False)
    kept = ort.ort_session(path).run(None, {"x": x})[0]
    assert np.all(flushed == 0.0) and np.all(kept == 2 * x)
    # the bench's own probe of the thread's mode, and the setter that checks it
    from jetdeploy.edge.bench import set_denormal_mode, thread_flushes_denormals

    try:
        set_denormal_mode(True)
        assert thread_flushes_denormals()
        ort.ort_session(path)  # a later session does not change the mode (only the process's first one may)
        assert thread_flushes_denormals()
    finally:
        set_denormal_mode(False)
    assert not thread_flushes_denormals()


# ---- LTP training and the bench command ----------------------------------------------------------
@pytest.fixture(scope="module")
def float_run(synth_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("edge") / "float"
    cfg = tiny_train_config(**{"quant.scheme": "float", "model.blocks": 2, "model.norm": "layernorm",
                               "model.pooling": "mean", "train.epochs": 2, "train.batch_size": 16})
    train(cfg, synth_file, run, progress=False)
    return run


def test_ltp_thresholds_move_and_reload(float_run, synth_file):
    cfg = LTPConfig(soft_epochs=1, hard_epochs=1, lam=1.0, threshold_lr=0.05, batch_size=16, budget=[1.0, 0.75])
    r = train_ltp(float_run, synth_file, cfg, progress=False)
    theta = r["thresholds"]
    assert len(theta) == 2 and all(abs(t) > 1e-3 for t in theta), theta  # learned, not left at 0
    assert r["history"][0]["soft_kept_fraction"] < 1.0
    pt = load_ltp(float_run)
    assert torch.allclose(pt.thresholds, torch.tensor(theta))
    assert pt.budgets == [16, 12]


def test_ltp_keeps_the_best_val_epoch_and_says_so(float_run, synth_file, tmp_path):
    """keep_epoch best: the saved weights and thresholds are those of the epoch with the best val accuracy (the first
    of equals), scored on the whole val split; keep_epoch last: the last epoch's. The reloaded model scores exactly
    the recorded accuracy of the kept epoch."""
    import shutil

    from jetdeploy.edge.ltp import _evaluate
    from jetdeploy.train.dataset import load_inputs

    val = load_inputs(synth_file, ckpt.load_model(float_run)[1]["config"].model, "val")
    for keep in ("best", "last"):
        run = tmp_path / keep
        shutil.copytree(float_run, run, ignore=shutil.ignore_patterns("edge"))
        # a learning rate so high that the val accuracy peaks before the last epoch (seeded: it does, epoch 2 of 4)
        r = train_ltp(run, synth_file, LTPConfig(soft_epochs=1, hard_epochs=3, batch_size=16, budget=[0.75, 0.5],
                                                 lr=0.3, keep_epoch=keep), progress=False)
        accs = [h["val_accuracy"] for h in r["history"]]
        want = accs.index(max(accs)) + 1 if keep == "best" else len(accs)
        assert r["kept_epoch"] == want and r["val_accuracy"] == accs[want - 1] and r["n_val_jets"] == len(val)
        assert keep == "last" or want < len(accs), accs  # the best is not the last: the choice is tested
        assert r["thresholds"] == r["history"][want - 1]["thresholds"]
        assert _evaluate(load_ltp(run), val)["accuracy"] == accs[want - 1]


def test_ltp_without_epochs_keeps_the_caps_and_records_one_scored_row(float_run, synth_file, tmp_path):
    """`edge ltp --soft-epochs 0 --hard-epochs 0`: the caps alone (thresholds 0, weights untouched), scored on val
    once; the command prints that row (it used to index an empty history)."""
    import shutil

    run = tmp_path / "caps"
    shutil.copytree(float_run, run, ignore=shutil.ignore_patterns("edge"))
    res = run_cli("edge", "ltp", "--run", str(run), "--data", str(synth_file), "--budget", "0.5,0.25",
                  "--soft-epochs", "0", "--hard-epochs", "0", "--quiet")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    rec = json.loads((run / "edge" / "ltp.json").read_text())
    assert [h["stage"] for h in rec["history"]] == ["caps"] and rec["thresholds"] == [0.0, 0.0]
    assert 0.0 < rec["history"][0]["val_kept_fraction"] < 1.0
    pt, (src, _) = load_ltp(run), ckpt.load_model(float_run)
    assert all(torch.equal(a, b) for a, b in zip(pt.model.state_dict().values(), src.state_dict().values()))
    assert "val accuracy" in res.stdout
    # --out DIR: the same, written into DIR; RUN/edge is left as it was, and DIR/ltp.pt loads against the run
    before = {p: p.read_bytes() for p in (run / "edge").iterdir()}
    out = tmp_path / "points" / "half"
    res = run_cli("edge", "ltp", "--run", str(run), "--data", str(synth_file), "--budget", "0.5,0.5", "--at", "0",
                  "--soft-epochs", "0", "--hard-epochs", "0", "--quiet", "--out", str(out))
    assert res.returncode == 0 and str(out / "ltp.pt") in res.stdout, res.stderr
    assert {p: p.read_bytes() for p in (run / "edge").iterdir()} == before
    assert json.loads((out / "ltp.json").read_text())["config"]["budget"] == [0.5, 0.5]
    assert load_ltp(run, out / "ltp.pt").spec.keep == [0.5, 0.5]
    # an --out that is a file (or under one) is refused by name before any training, and nothing is written
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        res = run_cli("edge", "ltp", "--run", str(run), "--data", str(synth_file), "--budget", "0.5,0.5",
                      "--soft-epochs", "0", "--hard-epochs", "0", "--quiet", "--out", str(bad))
        assert res.returncode == 2 and "Traceback" not in res.stderr and "is a file" in res.stderr, res.stderr
        assert (tmp_path / "afile").read_text() == "x" and "val accuracy" not in res.stdout


def test_distillation_loss():
    from jetdeploy.edge.ltp import distillation_loss

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    ce = torch.nn.functional.cross_entropy(student, y)
    assert torch.allclose(distillation_loss(student, teacher, y, 0.0, 2.0), ce)
    assert float(distillation_loss(teacher, teacher, y, 1.0, 2.0)) == pytest.approx(0.0, abs=1e-6)  # KL(p || p)
    s = student.clone().requires_grad_(True)  # a = 1: the gradient moves the student towards the teacher
    distillation_loss(s, teacher, y, 1.0, 2.0).backward()
    moved = s.detach() - 0.5 * s.grad
    kl = lambda a: float(distillation_loss(a, teacher, y, 1.0, 2.0))  # noqa: E731
    assert kl(moved) < kl(student)


def test_ltp_with_distillation_runs_and_records_it(float_run, synth_file, tmp_path):
    import shutil

    run = tmp_path / "kd"
    shutil.copytree(float_run, run, ignore=shutil.ignore_patterns("edge"))
    r = train_ltp(run, synth_file, LTPConfig(soft_epochs=1, hard_epochs=1, batch_size=16, budget=[1.0, 0.75],
                                             distill=0.5, max_train_jets=64), progress=False)
    assert r["config"]["distill"] == 0.5 and all(np.isfinite(h["train_loss"]) for h in r["history"])
    assert load_ltp(run).thresholds.numel() == 2
    with pytest.raises(ValueError):
        LTPConfig(distill=1.5)
    # pool entry is trained with the entering states carried, recorded, and reloaded as such
    r = train_ltp(run, synth_file, LTPConfig(soft_epochs=1, hard_epochs=1, batch_size=16, budget=[0.75, 0.5],
                                             pool="entry", max_train_jets=64), progress=False)
    assert r["config"]["pool"] == "entry" and all(np.isfinite(h["train_loss"]) for h in r["history"])
    assert load_ltp(run).spec.pool == "entry"
    with pytest.raises(ValueError):
        LTPConfig(pool="drop")


def test_cli_edge_bench_end_to_end(float_run, synth_file, tmp_path):
    # a second LTP operating point of the run, written beside it (`edge ltp --out DIR`), is timed side by side
    second = tmp_path / "second"
    train_ltp(float_run, synth_file, LTPConfig(soft_epochs=1, hard_epochs=1, lam=2.0, batch_size=16, budget=[1.0, 0.5],
                                               pool="entry"), progress=False, out_dir=second)
    res = run_cli("edge", "bench", "--run", str(float_run), "--data", str(synth_file), "--keep", "0.75,0.5",
                  "--ltp", str(second / "ltp.pt"), "--latency-block", "4",
                  "--batch", "16", "--batches", "2", "--rounds", "1", "--n-latency", "10", "--quiet")
    assert res.returncode == 0, res.stderr
    bench = json.loads((float_run / "edge" / "bench.json").read_text())
    assert bench["ok"] and all(c["ok"] for c in bench["checks"])
    assert any(c["name"].startswith("float-padded:") and "max_abs_diff_static" in c for c in bench["checks"])
    assert "static graph" in bench["timing"]["batch1_inputs"]
    assert bench["timing"]["denormals_flushed"] is True and "denormals flushed" in (float_run / "edge" / "bench.md").read_text()
    v = bench["variants"]
    for name in ("float-padded", "float-nopad", "zerotprune[0.75,0.5]", "zerotprune[0.75,0.5]+int8",
                 "random[0.75,0.5]", "torch-eager", "float-padded+int8"):
        assert name in v, name
    assert v["zerotprune[0.75,0.5]"]["macs_per_jet"] < v["float-nopad"]["macs_per_jet"] < v["float-padded"]["macs_per_jet"]
    assert v["float-padded"]["throughput_vs_float_padded"] == 1.0
    assert v["zerotprune[0.75,0.5]"]["throughput_jets_per_s"] > 0 and v["zerotprune[0.75,0.5]"]["latency_ms_p99"] > 0
    assert v["random[0.75,0.5]"]["timed"] is False
    assert v["float-nopad"]["throughput_bucketed_jets_per_s"] > 0
    # every gain is also quoted over the padding-free graph (what one deploys without pruning), on a named CPU
    assert v["float-nopad"]["throughput_bucketed_vs_float_nopad"] == 1.0 == v["float-nopad"]["latency_p50_gain_vs_float_nopad"]
    assert v["zerotprune[0.75,0.5]"]["throughput_bucketed_vs_float_nopad"] > 0 and bench["timing"]["cpu"]
    assert ("ltp-weights-unpruned" in v) == (float_run / "edge" / "ltp.pt").exists()
    assert v["ltp@second"]["timed"] and v["ltp@second"]["keep"] == [1.0, 0.5] and v["ltp@second"]["throughput_jets_per_s"] > 0
    assert v["ltp@second"]["pool"] == v["ltp@second+int8"]["pool"] == "entry"
    assert "ltp@second (pool entry)" in (float_run / "edge" / "bench.md").read_text()
    # batch 1, warm (blocks of 4 jets per variant) and cold (variants take turns jet by jet), 10 jets each
    assert bench["timing"]["latency_block"] == 4
    assert all(v[k]["latency_ms_p50_cold"] > 0 and v[k]["latency_p50_cold_gain_vs_float_padded"] > 0
               for k in ("float-padded", "ltp@second", "torch-eager"))
    assert any(c["name"].startswith("ltp@second") and c["ok"] for c in bench["checks"])
    assert (float_run / "edge" / "pareto.png").stat().st_size > 1000
    assert "zerotprune[0.75,0.5]" in (float_run / "edge" / "bench.md").read_text()
    # every accuracy change carries its paired standard error; the float model against itself has none
    assert v["torch-eager"]["accuracy_change_se"] == 0.0
    assert all(np.isfinite(x["accuracy_change_se"]) and x["accuracy_change_se"] >= 0 for x in v.values())
    changed = [k for k, x in v.items() if x["accuracy_change"] != 0]
    assert all(v[k]["accuracy_change_se"] > 0 for k in changed)  # a changed accuracy means jets changed class


def test_paired_accuracy_se_by_hand():
    from jetdeploy.checks import paired_accuracy_se

    ref = np.array([1, 1, 0, 0, 1, 0, 1, 1], bool)
    assert paired_accuracy_se(ref, ref) == 0.0  # same jets right, no uncertainty in the difference
    other = ref.copy()
    other[[0, 2]] = ~other[[0, 2]]  # one jet lost, one gained: the difference is 0, its error is not
    d = np.array([-1, 0, 1, 0, 0, 0, 0, 0], float)
    assert paired_accuracy_se(ref, other) == pytest.approx(np.sqrt(d.var(ddof=1) / 8))
    assert paired_accuracy_se(ref, other) == pytest.approx(np.sqrt(2 / 7 / 8))


def test_cli_edge_errors(float_run, synth_file, tmp_path):
    res = run_cli("edge", "bench", "--run", str(tmp_path / "nope"), "--data", str(synth_file))
    assert res.returncode == 2 and "model.pt" in res.stderr
    res = run_cli("edge", "bench", "--run", str(float_run), "--data", str(synth_file), "--latency-block", "0")
    assert res.returncode == 2 and "--latency-block 0" in res.stderr
    res = run_cli("edge", "bench", "--run", str(float_run), "--data", str(synth_file), "--keep", "0.5,x")
    assert res.returncode == 2 and "comma-separated fractions" in res.stderr
    res = run_cli("edge", "bench", "--run", str(float_run), "--data", str(synth_file), "--keep", "0.5,0.4,0.3")
    assert res.returncode == 2 and "keep has 3 entries" in res.stderr
    with pytest.raises(JetDeployError, match="ltp.pt: missing"):
        load_ltp(tmp_path)
    # an LTP checkpoint of another model is refused by name
    other = tmp_path / "other"
    cfg = tiny_train_config(**{"quant.scheme": "float", "model.blocks": 2, "model.norm": "layernorm", "model.ffn_dim": 24,
                               "model.pooling": "mean", "train.epochs": 1, "train.batch_size": 16})
    train(cfg, synth_file, other, progress=False)
    train_ltp(other, synth_file, LTPConfig(soft_epochs=1, hard_epochs=0, batch_size=16), progress=False)
    res = run_cli("edge", "bench", "--run", str(float_run), "--data", str(synth_file), "--ltp",
                  str(other / "edge" / "ltp.pt"), "--batch", "16", "--batches", "1", "--rounds", "1", "--quiet")
    assert res.returncode == 2 and "made from another model" in res.stderr


def test_bench_with_the_qat_twin_prunes_its_qcdq_graph(float_run, synth_file, tmp_path_factory):
    from jetdeploy.edge.bench import edge_bench
    from jetdeploy.export.verify import export_run

    int8 = tmp_path_factory.mktemp("edge-int8") / "int8"
    cfg = tiny_train_config(**{"quant.scheme": "int8", "quant.weight_bits": 7, "quant.act_bits": 8,
                               "quant.overrides": {"*.k_quant": 7, "*.v_quant": 7},
                               "quant.bias_bits": 32, "quant.init_from": str(float_run), "model.blocks": 2,
                               "model.norm": "layernorm", "model.pooling": "mean", "train.epochs": 1,
                               "train.batch_size": 16})
    train(cfg, synth_file, int8, progress=False)
    export_run(int8, synth_file, n_verify=50, progress=False)
    r = edge_bench(float_run, synth_file, keeps=[[0.75, 0.5]], int8_run=int8,
                   settings=BenchSettings(n_latency=5, n_batches=2, rounds=1, batch=16), progress=False)
    names = {c["name"]: c for c in r["checks"]}
    chk = names["qcdq+zerotprune[0.75,0.5]: ONNX (ORT) vs Brevitas"]
    assert chk["ok"] and chk["argmax_agreement"] >= 0.995
    v = r["variants"]["qcdq+zerotprune[0.75,0.5]"]
    assert v["macs_per_jet"] < r["variants"]["qcdq"]["macs_per_jet"] and 0 < v["accuracy"] <= 1


def test_bench_compares_the_methods_at_ltp_budget(float_run, synth_file):
    from jetdeploy.edge.bench import edge_bench

    if not (float_run / "edge" / "ltp.pt").exists():
        train_ltp(float_run, synth_file, LTPConfig(soft_epochs=1, hard_epochs=0, batch_size=16, budget=[1.0, 0.75]),
                  progress=False)
    r = edge_bench(float_run, synth_file, keeps=[[0.75, 0.5]],
                   settings=BenchSettings(n_latency=3, n_batches=1, rounds=1, batch=16), progress=False)
    v = r["variants"]
    budget = load_ltp(float_run).spec.keep
    label = ",".join(f"{k:g}" for k in budget)
    assert f"random[{label}]" in v and f"zerotprune[{label}]" in v and "ltp" in v
    assert v["ltp"]["macs_per_jet"] <= v[f"random[{label}]"]["macs_per_jet"] + 1e-6  # LTP keeps at most the budget
    assert 0 < v["ltp-weights-unpruned"]["accuracy"] <= 1


# ---- ParT-style models (pair bias from the four-vectors) on the edge ----------------------------------------
def _pair_jets(lengths, n_particles=8, seed=1):
    x, mask = _jets(lengths, n_particles, seed)
    g = np.random.default_rng(seed)
    p = g.normal(size=(len(lengths), n_particles, 3)) * 10
    p4 = np.concatenate([p, np.linalg.norm(p, axis=-1, keepdims=True) + 0.5], -1) * mask[..., None]
    p4[0, 0, :2] = 0.0  # a real particle along the beam: phi = atan2(0, 0), which ONNX's Atan(y / x) would make NaN
    return x, mask, p4.astype(np.float32)


def pair_tagger(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="transformer", n_particles=8, features=["deta", "dphi", "log_pt_rel"], dim=8, heads=2,
                      blocks=2, ffn_dim=16, norm="layernorm", pooling="mean", pair_bias=True)
    return TransformerTagger(cfg, 3, 5).eval()


@pytest.mark.parametrize("spec", [PruneSpec(method="none"), PruneSpec(method="zerotprune", keep=[0.75, 0.5]),
                                  PruneSpec(method="ltp", keep=[0.75, 0.5], pool="entry"),
                                  PruneSpec(method="ltp", keep=[0.75, 0.75], pool="fuse", at=[0])],
                         ids=["nopad", "ztp", "ltp-entry", "ltp-fuse"])
def test_pair_bias_graphs_take_p4_and_equal_torch(spec, tmp_path):
    """A ParT-style model's graphs compute the pairwise features from p4 (a third input) and, pruned, keep the
    pair tensor's rows and columns of the kept tokens: ORT == torch on mixed lengths and on single jets."""
    pt = PrunedTagger(pair_tagger(), spec, thresholds=torch.tensor([0.9, 1.0]) if spec.method == "ltp" else None)
    batched, single = tmp_path / "b.onnx", tmp_path / "s.onnx"
    graphs.export_float(graphs.Deployable(pt).eval(), 3, 8, batched)
    graphs.export_float(SingleJet(pt).eval(), 3, 8, single, single=True)
    assert [i.name for i in ort.ort_session(batched).get_inputs()] == ["x", "mask", "p4"]
    assert [i.name for i in ort.ort_session(single).get_inputs()] == ["x", "p4"]
    x, mask, p4 = _pair_jets([8, 5, 2, 1, 7, 3, 8, 6, 4])
    chk = verify_pruned(ort.ort_session(batched), ort.ort_session(single), pt, x, mask, p4=p4)
    assert chk["ok"] and chk["max_abs_diff_batch1"] < 1e-5 and chk["max_abs_diff_batch3"] < 1e-5, chk
    with torch.no_grad():
        xt, mt, pt4 = torch.from_numpy(x), torch.from_numpy(mask) > 0.5, torch.from_numpy(p4)
        got = pt(xt, mt, pt4)
        if spec.method == "none":  # padding removal changes nothing
            assert torch.allclose(got, pt.model(xt, mt, pt4), atol=1e-5)
        else:
            assert int(pt.last_counts[-1].max()) < 8
        # the pair bias matters: other four-vectors, other logits
        assert not torch.allclose(got, pt(xt, mt, pt4.flip(1)), atol=1e-4)
    with pytest.raises(JetDeployError, match="four-vectors"):
        pt(xt, mt)


def test_gathered_pair_rows_and_columns_equal_the_bias_of_the_kept_particles():
    from jetdeploy.edge.tokens import gather_pairs

    m = pair_tagger()
    _, mask, p4 = _pair_jets([8, 5, 7])
    p4 = torch.from_numpy(p4)
    idx = torch.tensor([[3, 0, 6], [4, 1, 2], [6, 5, 0]])
    with torch.no_grad():
        assert torch.allclose(gather_pairs(m.pair(p4), idx), m.pair(gather_tokens(p4, idx)), atol=1e-6)


@pytest.fixture(scope="module")
def pair_run(synth_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("edge") / "part"
    cfg = tiny_train_config(**{"quant.scheme": "float", "model.blocks": 2, "model.norm": "layernorm",
                               "model.pooling": "mean", "model.pair_bias": True, "train.epochs": 2,
                               "train.batch_size": 16})
    train(cfg, synth_file, run, progress=False)
    return run


def test_pair_bias_run_exports_ltp_trains_and_benches_beside_the_plain_run(float_run, pair_run, synth_file, tmp_path):
    res = run_cli("export", "--run", str(pair_run), "--data", str(synth_file), "--n-verify", "60")
    assert res.returncode == 0, res.stderr
    ver = json.loads((pair_run / "export" / "verify.json").read_text())
    float_chk = next(c for c in ver["checks"] if c["name"] == "float ONNX (ORT) vs torch")
    assert float_chk["ok"] and float_chk["n"] == 60
    r = train_ltp(pair_run, synth_file, LTPConfig(soft_epochs=1, hard_epochs=1, batch_size=16, budget=[0.75, 0.5],
                                                  max_train_jets=64), progress=False)
    assert all(np.isfinite(h["train_loss"]) for h in r["history"])
    main = tmp_path / "plain"
    import shutil

    shutil.copytree(float_run, main, ignore=shutil.ignore_patterns("edge"))
    res = run_cli("edge", "bench", "--run", str(main), "--data", str(synth_file), "--keep", "0.75,0.5",
                  "--beside", str(pair_run), "--batch", "16", "--batches", "2", "--rounds", "1", "--n-latency", "6",
                  "--latency-block", "3", "--quiet")
    assert res.returncode == 0, res.stderr
    bench = json.loads((main / "edge" / "bench.json").read_text())
    v = bench["variants"]
    for name in ("part/float-nopad", "part/zerotprune[0.75,0.5]", "part/ltp", "part/ltp+int8"):
        assert v[name]["timed"] and v[name]["throughput_jets_per_s"] > 0 and v[name]["latency_ms_p50"] > 0, name
        assert v[name]["pair_bias"] and v[name]["source_run"] == "part"
    assert all(c["ok"] for c in bench["checks"]) and any(c["name"].startswith("part/ltp:") for c in bench["checks"])
    # its accuracy is quoted against the plain run's on the same jets, its speed against the plain padding-free graph
    assert v["part/float-nopad"]["accuracy_change"] == pytest.approx(v["part/float-nopad"]["accuracy"]
                                                                      - v["float-padded"]["accuracy"])
    assert v["part/float-nopad"]["macs_per_jet"] > v["float-nopad"]["macs_per_jet"]  # the pair MLP's MACs
    # and each of its rows against its own padding-free graph too: what pruning buys and costs the ParT model
    own, pruned = v["part/float-nopad"], v["part/ltp"]
    assert own["accuracy_change_vs_own"] == 0 and own["throughput_bucketed_vs_own_nopad"] == pytest.approx(1.0)
    assert pruned["accuracy_change_vs_own"] == pytest.approx(pruned["accuracy"] - own["accuracy"])
    assert pruned["throughput_bucketed_vs_own_nopad"] == pytest.approx(pruned["throughput_bucketed_jets_per_s"]
                                                                       / own["throughput_bucketed_jets_per_s"])
    assert pruned["latency_p50_gain_vs_own_nopad"] == pytest.approx(own["latency_ms_p50"] / pruned["latency_ms_p50"])
    assert not any("accuracy_change_vs_own" in v[k] for k in ("float-nopad", "float-padded", "zerotprune[0.75,0.5]"))
    md = (main / "edge" / "bench.md").read_text()
    assert "## part: against its own padding-free graph (part/float-nopad)" in md
    assert f"| part/ltp | {pruned['accuracy']:.4f} | {pruned['accuracy_change_vs_own']:+.4f} |" in md
    res = run_cli("edge", "bench", "--run", str(main), "--data", str(synth_file), "--beside", str(main / "nope"))
    assert res.returncode == 2 and "nope" in res.stderr and "Traceback" not in res.stderr


def test_ltp_at_chosen_blocks_prunes_only_there_and_exports(float_run, synth_file, tmp_path):
    """`edge ltp --at 0`: one pruning step, after block 0's attention; the later blocks see what it kept, the
    graph has one TopK, and ORT equals torch."""
    import shutil

    import onnx

    run = tmp_path / "at"
    shutil.copytree(float_run, run, ignore=shutil.ignore_patterns("edge"))
    res = run_cli("edge", "ltp", "--run", str(run), "--data", str(synth_file), "--at", "0", "--budget", "0.5,0.5",
                  "--soft-epochs", "1", "--hard-epochs", "1", "--max-train-jets", "64", "--quiet")
    assert res.returncode == 0, res.stderr
    pt = load_ltp(run)
    assert pt.spec.at == [0] and pt.steps == [True, False]
    N = pt.model.cfg.n_particles
    x = np.random.default_rng(0).normal(size=(9, N, len(pt.model.cfg.features))).astype(np.float32)
    mask = (np.arange(N)[None, :] < np.array([N, 5, 2, 1, N - 1, 3, N, 9, 4])[:, None]).astype(np.float32)
    x *= mask[..., None]
    with torch.no_grad():
        pt(torch.from_numpy(x), torch.from_numpy(mask) > 0.5)
    assert torch.equal(pt.last_counts[1], pt.last_counts[2]) and int(pt.last_counts[1].max()) <= N // 2
    assert int(pt.last_counts[1][0]) < N  # the long jets lost tokens in block 0
    single = tmp_path / "s.onnx"
    graphs.export_float(SingleJet(pt).eval(), x.shape[-1], N, single, single=True)
    assert [n.op_type for n in onnx.load(single).graph.node].count("TopK") == 1
    graphs.export_float(graphs.Deployable(pt).eval(), x.shape[-1], N, tmp_path / "b.onnx")
    chk = verify_pruned(ort.ort_session(tmp_path / "b.onnx"), ort.ort_session(single), pt, x, mask)
    assert chk["ok"], chk
    res = run_cli("edge", "ltp", "--run", str(run), "--data", str(synth_file), "--at", "2")
    assert res.returncode == 2 and "at=[2]" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("edge", "ltp", "--run", str(run), "--data", str(synth_file), "--at", "1,0")
    assert res.returncode == 2 and "increasing" in res.stderr
    res = run_cli("edge", "ltp", "--run", str(run), "--data", str(synth_file), "--threads", "0")
    assert res.returncode == 2 and "--threads 0" in res.stderr


def test_ltp_select_hardest_fine_tunes_the_truncation_and_benches_it(float_run, synth_file, tmp_path):
    """`edge ltp --select hardest`: the caps keep each jet's first (hardest) particles, the model is fine-tuned under
    that rule (its weights move), the single-jet graph selects with no TopK and equals torch, and the bench names it
    hardest-ft@DIR; a soft stage or --at with it is refused with exit 2 and nothing written."""
    import shutil

    import onnx

    from dataclasses import replace

    from jetdeploy.data.schema import read_jets, write_jets

    run = tmp_path / "hard"
    shutil.copytree(float_run, run, ignore=shutil.ignore_patterns("edge"))
    bad = run_cli("edge", "ltp", "--run", str(run), "--data", str(synth_file), "--select", "hardest", "--budget", "0.5,0.5")
    assert bad.returncode == 2 and "soft_epochs 0" in bad.stderr and "Traceback" not in bad.stderr
    # the synthetic jets are not sorted by pT: the rule would keep arbitrary particles, so it is refused
    bad = run_cli("edge", "ltp", "--run", str(run), "--data", str(synth_file), "--select", "hardest", "--budget",
                  "0.5,0.5", "--soft-epochs", "0", "--hard-epochs", "1", "--quiet")
    assert bad.returncode == 2 and "hardest first" in bad.stderr and "Traceback" not in bad.stderr
    assert not (run / "edge").exists()
    # the same jets with their particles sorted hardest first (by the model's pT feature), written here
    from jetdeploy.edge.tokens import PT_FEATURES

    jets = read_jets(synth_file)
    feats = list(ckpt.load_model(float_run)[0].cfg.features)
    col = list(jets.particle_feature_names).index(next(f for f in PT_FEATURES if f in feats))
    key = np.where(jets.mask, -jets.particle_features[..., col], np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    take = lambda a: np.take_along_axis(a, order.reshape(*order.shape, *([1] * (a.ndim - 2))), axis=1)
    sorted_file = tmp_path / "sorted.h5"
    write_jets(sorted_file, replace(jets, particle_features=take(jets.particle_features), p4=take(jets.p4),
                                    charge=take(jets.charge), pdgid=take(jets.pdgid), mask=take(jets.mask)))
    res = run_cli("edge", "ltp", "--run", str(run), "--data", str(sorted_file), "--select", "hardest", "--budget",
                  "0.5,0.5", "--soft-epochs", "0", "--hard-epochs", "1", "--max-train-jets", "64", "--quiet")
    assert res.returncode == 0, res.stderr
    pt = load_ltp(run)
    assert pt.spec.method == "hardest" and pt.steps == [True, False]
    before = ckpt.load_model(float_run)[0].state_dict()
    assert any(not torch.equal(before[k], v) for k, v in pt.model.state_dict().items())  # fine-tuned
    N = pt.model.cfg.n_particles
    x, mask = _jets([N, 5, 2, 1, N - 1, 3])
    single = tmp_path / "s.onnx"
    graphs.export_float(SingleJet(pt).eval(), x.shape[-1], N, single, single=True)
    assert "TopK" not in [n.op_type for n in onnx.load(single).graph.node]
    graphs.export_float(graphs.Deployable(pt).eval(), x.shape[-1], N, tmp_path / "b.onnx")
    chk = verify_pruned(ort.ort_session(tmp_path / "b.onnx"), ort.ort_session(single), pt, x, mask)
    assert chk["ok"] and chk["max_abs_diff_batch1"] < 1e-5, chk
    from jetdeploy.edge.variants import torch_variants
    from jetdeploy.runfolder import RunFolder

    mods = torch_variants(RunFolder(float_run), ckpt.load_model(float_run)[0], [], [run / "edge" / "ltp.pt"], print)
    assert "hardest-ft@hard" in mods and mods["hardest-ft@hard"].spec.method == "hardest"
    from jetdeploy.edge.variants import score_in_torch

    xt, mt = torch.from_numpy(x), torch.from_numpy(mask) > 0.5  # _jets: random, unsorted particles
    with pytest.raises(JetDeployError, match="not sorted hardest first"):
        score_in_torch(mods, pt.model, [], xt, mt, torch.zeros(len(x), dtype=torch.long), N)
