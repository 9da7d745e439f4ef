"""Hugging Face classifiers (GPT-2, BERT, ViT) through modtest.frameworks.transformers: the graph read
from their weights (checked against the definitions written out with the torch tensors), the lesions
(against edited copies of the weights), safe loading of folders, the data layout, the audit.

No TensorFlow in this file: torch.export and transformers next to TensorFlow crash the process."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modtest.frameworks.torch.runtime import import_torch  # noqa: E402

# through modtest's import: torch imported here may precede TensorFlow (another file of this worker),
# and transformers' model classes import torch._dynamo, whose triton import would then segfault
from modtest.frameworks.transformers.runtime import import_transformers  # noqa: E402

torch = import_torch()

from modtest.errors import DataError, ModelLoadError, UnsafeModelError  # noqa: E402
from modtest.frameworks import adapt, check_model_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _uneven_gains(m):
    """``m`` with LayerNorm gains that are not all 1, so that folding them is tested."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.uniform_(0.5, 2.0)
    return m


def _gpt2(seed=0, n_layer=2, num_labels=3):
    import_transformers()  # triton kept out when TensorFlow is loaded
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=16, n_head=4, vocab_size=20, n_positions=16, num_labels=num_labels,
                     use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    m = GPT2ForSequenceClassification(cfg).eval()
    return _uneven_gains(m)


def _bert(seed=0):
    import_transformers()  # triton kept out when TensorFlow is loaded
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    m = BertForSequenceClassification(BertConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=4,
                                                 intermediate_size=24, vocab_size=20, max_position_embeddings=16,
                                                 num_labels=3, initializer_range=0.3)).eval()
    return _uneven_gains(m)


def _vit(seed=0):
    import_transformers()  # triton kept out when TensorFlow is loaded
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    return ViTForImageClassification(ViTConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                               intermediate_size=24, image_size=8, patch_size=4, num_channels=3,
                                               num_labels=3, initializer_range=0.3)).eval()


def _tokens(n=40, t=8, seed=0, vocab=20):
    from modtest.frameworks.transformers import token_inputs

    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(n, t))
    mask = np.ones_like(ids)
    mask[::4, t - 3:] = 0
    ids[mask == 0] = 0
    return token_inputs(ids, mask)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2")
    _gpt2().save_pretrained(d)
    return d


def _t(x):
    return x.detach().double().numpy()


# ------------------------------------------------------------------------------------------ graph

def test_gpt2_graph_is_the_virtual_weights_of_its_tensors():
    m = _gpt2()
    a = adapt(m)
    assert a.unit_layers() == ["block0.attn", "block0.mlp", "block1.attn", "block1.mlp"]
    g = __import__("modtest").build_graph(a)
    assert g.layer_names == ["embed", "block0.attn", "block0.mlp", "block1.attn", "block1.mlp", "out"]
    assert g.layer_sizes == [16, 4, 64, 4, 64, 3] and g.roles == ["input"] + ["hidden"] * 4 + ["output"]
    adj = g.adjacency.toarray()
    h0, h1 = m.transformer.h
    node = lambda layer, u: g.offsets[g.layer_names.index(layer)] + u  # noqa: E731
    # neuron 5 (block 0) -> neuron 7 (block 1): |W_out0[5] . (ln_2 gain of block 1 * W_in1[:, 7])|
    want = abs(_t(h0.mlp.c_proj.weight)[5] @ (_t(h1.ln_2.weight) * _t(h1.mlp.c_fc.weight)[:, 7]))
    assert adj[node("block0.mlp", 5), node("block1.mlp", 7)] == pytest.approx(want, rel=1e-9)
    # head 2 (block 0) -> neuron 3 (block 0): ||M r||, M = diag(ln_1) W_V[:, head] W_O[head, :]
    dh, d = 4, 16
    wv = _t(h0.attn.c_attn.weight)[:, 2 * d + 2 * dh:2 * d + 3 * dh]
    wo = _t(h0.attn.c_proj.weight)[2 * dh:3 * dh]
    ov = np.diag(_t(h0.ln_1.weight)) @ wv @ wo
    r = _t(h0.ln_2.weight) * _t(h0.mlp.c_fc.weight)[:, 3]
    assert adj[node("block0.attn", 2), node("block0.mlp", 3)] == pytest.approx(np.linalg.norm(ov @ r), rel=1e-9)
    # neuron 1 (block 1) -> class 2: through ln_f and the score head
    want = abs(_t(h1.mlp.c_proj.weight)[1] @ (_t(m.transformer.ln_f.weight) * _t(m.score.weight)[2]))
    assert adj[node("block1.mlp", 1), node("out", 2)] == pytest.approx(want, rel=1e-9)
    # embedding dim 4 -> head 0 (block 1): ||e_4 M'|| = ||row 4 of M'||
    wv1 = _t(h1.attn.c_attn.weight)[:, 2 * d:2 * d + dh]
    ov1 = np.diag(_t(h1.ln_1.weight)) @ wv1 @ _t(h1.attn.c_proj.weight)[:dh]
    assert adj[node("embed", 4), node("block1.attn", 0)] == pytest.approx(np.linalg.norm(ov1[4]), rel=1e-9)
    # a block's neurons are not connected among themselves, nor its heads
    assert not adj[g.layer_slice("block0.mlp"), g.layer_slice("block0.mlp")].any()
    assert not adj[g.layer_slice("block1.attn"), g.layer_slice("block1.attn")].any()
    np.testing.assert_allclose(adj, adj.T)


def _attention_of(family, model):
    """(the block-1 or block-0 attention as a function of its (post-LN) input, the LN gain before it)."""
    if family == "gpt2":
        blk = model.transformer.h[1]
        return "block1.attn", (lambda z: blk.attn(z)[0]), _t(blk.ln_1.weight)
    if family == "bert":
        att = model.bert.encoder.layer[1].attention
        return "block1.attn", (lambda z: att.output.dense(att.self(z)[0])), np.ones(16)  # post-LN: no gain
    blk = model.vit.layers[0]
    return "block0.attn", (lambda z: blk.attention(z)[0]), _t(blk.layernorm_before.weight)


@pytest.mark.parametrize("family", ["gpt2", "bert", "vit"])
def test_head_factors_have_the_norms_of_the_heads_measured_ov_circuit(family):
    """Independent of how the weights are sliced: head h's OV circuit is *measured* by running the
    attention on one token (attention weight 1) with and without the head (the engine's lesion hook),
    M_h[k] = (contribution of input e_k) - (contribution of input 0), times the LayerNorm gain before
    it. The graph's factors must have its norms: ||x M_h|| = ||x read_h||, ||M_h y|| = ||write_h y||."""
    from modtest.frameworks.transformers.engines import ReferenceEngine

    m = {"gpt2": _gpt2, "bert": _bert, "vit": _vit}[family]()
    a = adapt(m)
    name, attn, gain = _attention_of(family, m)
    d = 16
    x_any = np.zeros((2, 3, 8, 8), np.float32) if family == "vit" else _tokens(n=2)
    eng = ReferenceEngine(a.family, x_any)
    layer = next(s for s in a.sublayers() if getattr(s, "name", "") == name)
    rng = np.random.default_rng(4)
    for h in range(a.family.n_heads):
        def contribution(inp, h=h):
            with torch.no_grad():
                full = attn(inp)
                hook = eng._hook(name, np.array([h]))
                try:
                    without = attn(inp)
                finally:
                    hook.remove()
            return (full - without).double().numpy()[:, 0]  # (batch, d)

        basis = torch.cat([torch.eye(d), torch.zeros(1, d)])[:, None, :]  # (d + 1, T=1, d)
        c = contribution(basis)
        ov = gain[:, None] * (c[:d] - c[d])  # (d, d)
        assert np.abs(ov).max() > 1e-3  # the head does something
        for _ in range(3):
            x, y = rng.normal(size=d), rng.normal(size=d)
            assert np.linalg.norm(x @ ov) == pytest.approx(np.linalg.norm(x @ layer.read[h]), rel=1e-4)
            assert np.linalg.norm(ov @ y) == pytest.approx(np.linalg.norm(layer.write[h] @ y), rel=1e-4)


def test_bert_post_layernorm_gains_scale_the_stream():
    """BERT (post-LN): neuron i of block 0 -> neuron j of block 1 passes block 0's output LayerNorm and
    block 1's attention-output LayerNorm: |W_out0[i] . (g_a * g_b * W_in1[:, j])|; the pooler reads the
    stream after all of them and the classes read the pooler."""
    m = _bert()
    a = adapt(m)
    assert a.unit_layers() == ["block0.attn", "block0.mlp", "block1.attn", "block1.mlp", "pooler"]
    g = __import__("modtest").build_graph(a)
    assert [n for n, r in zip(g.layer_names, g.roles) if r == "hidden"] == a.unit_layers()
    adj = g.adjacency.toarray()
    l0, l1 = m.bert.encoder.layer
    node = lambda layer, u: g.offsets[g.layer_names.index(layer)] + u  # noqa: E731
    gain = _t(l0.output.LayerNorm.weight) * _t(l1.attention.output.LayerNorm.weight)
    want = abs(_t(l0.output.dense.weight)[:, 2] @ (gain * _t(l1.intermediate.dense.weight)[5]))
    assert adj[node("block0.mlp", 2), node("block1.mlp", 5)] == pytest.approx(want, rel=1e-9)
    gain = _t(l1.output.LayerNorm.weight)
    want = abs(_t(l1.output.dense.weight)[:, 3] @ (gain * _t(m.bert.pooler.dense.weight)[6]))
    assert adj[node("block1.mlp", 3), node("pooler", 6)] == pytest.approx(want, rel=1e-9)
    assert adj[node("pooler", 6), node("out", 1)] == pytest.approx(abs(_t(m.classifier.weight)[1, 6]), rel=1e-9)
    assert not adj[g.layer_slice("block1.mlp"), g.layer_slice("out")].any()  # only through the pooler


def test_vit_graph_layers():
    a = adapt(_vit())
    assert a.unit_layers() == ["block0.attn", "block0.mlp"] and a.input_shape == (3, 8, 8)
    g = __import__("modtest").build_graph(a)
    assert g.layer_sizes == [16, 2, 24, 3]


# ------------------------------------------------------------------------------------------ lesions

def _logits_with(a, x, lesions):
    eng = a.lesion_engine(x, engine="reference")
    handles = [eng._hook(layer, np.asarray(u)) for layer, u in lesions]
    try:
        with torch.inference_mode():
            return a.family.forward(torch.as_tensor(x)).double().numpy()
    finally:
        for h in handles:
            h.remove()


def test_neuron_lesion_is_zeroed_incoming_weights_and_bias():
    m = _gpt2()
    a = adapt(m)
    x = _tokens()
    units = [0, 3, 9, 40]
    got = _logits_with(a, x, [("block1.mlp", units)])
    copy = _gpt2()
    with torch.no_grad():
        copy.transformer.h[1].mlp.c_fc.weight[:, units] = 0  # Conv1D (in, out): the units' incoming weights
        copy.transformer.h[1].mlp.c_fc.bias[units] = 0
    want = adapt(copy).family.forward(torch.as_tensor(x)).detach().double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, a.family.forward(torch.as_tensor(x)).detach().double().numpy())


def test_head_lesion_zeroes_the_heads_output_before_the_projection():
    m = _gpt2()
    a = adapt(m)
    x = _tokens()
    got = _logits_with(a, x, [("block0.attn", [1, 3])])
    copy = _gpt2()
    with torch.no_grad():
        for h in (1, 3):  # the head's rows of the output projection (Conv1D (in, out)), bias kept
            copy.transformer.h[0].attn.c_proj.weight[h * 4:(h + 1) * 4] = 0
    want = adapt(copy).family.forward(torch.as_tensor(x)).detach().double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bert_and_vit_lesions_match_edited_copies():
    x = _tokens()
    a = adapt(_bert())
    got = _logits_with(a, x, [("block0.mlp", [2, 5]), ("block1.attn", [0]), ("pooler", [1])])
    c = _bert()
    with torch.no_grad():
        c.bert.encoder.layer[0].intermediate.dense.weight[[2, 5]] = 0
        c.bert.encoder.layer[0].intermediate.dense.bias[[2, 5]] = 0
        c.bert.encoder.layer[1].attention.output.dense.weight[:, 0:4] = 0  # Linear (out, in): the head's inputs
        c.bert.pooler.dense.weight[1] = 0
        c.bert.pooler.dense.bias[1] = 0
    want = adapt(c).family.forward(torch.as_tensor(x)).detach().double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    xi = np.random.default_rng(1).normal(size=(6, 3, 8, 8)).astype(np.float32)
    a = adapt(_vit())
    got = _logits_with(a, xi, [("block0.attn", [1]), ("block0.mlp", [0, 7])])
    c = _vit()
    with torch.no_grad():
        c.vit.layers[0].attention.o_proj.weight[:, 8:16] = 0
        c.vit.layers[0].mlp.fc1.weight[[0, 7]] = 0
        c.vit.layers[0].mlp.fc1.bias[[0, 7]] = 0
    want = adapt(c).family.forward(torch.as_tensor(xi)).detach().double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_engine_labels_shape_and_bad_units():
    from modtest.errors import InvalidInput

    a = adapt(_gpt2())
    x = _tokens(n=12)
    eng = a.lesion_engine(x, engine="reference")
    lab = eng.labels("block0.mlp", [[0, 1], [], list(range(64))], fixed=[("block1.attn", [0])])
    assert lab.shape == (3, 12) and eng.base_labels().shape == (12,)
    with pytest.raises(InvalidInput, match=r"must lie in \[0, 3\]"):
        eng.labels("block0.attn", [[4]])
    with pytest.raises(InvalidInput, match="unknown engine"):
        a.lesion_engine(x, engine="warp")


@pytest.mark.parametrize("family", ["gpt2", "bert", "vit"])
@pytest.mark.parametrize("keep_bias", [False, True])
def test_fast_engine_gives_the_reference_labels(family, keep_bias):
    """Variants stacked along the batch axis (several per call, and a batch_size that splits the
    examples) give the reference engine's labels, with a fixed lesion in another layer too."""
    model = {"gpt2": _gpt2, "bert": _bert, "vit": _vit}[family]()
    a = adapt(model)
    x = (np.random.default_rng(2).normal(size=(30, 3, 8, 8)).astype(np.float32) if family == "vit"
         else _tokens(n=30))
    rng = np.random.default_rng(7)
    base, changed = a.lesion_engine(x, engine="reference").base_labels(), False
    for layer in a.unit_layers():
        width = a.family.layer_width(layer)
        sets = [rng.choice(width, size=rng.integers(1, width + 1), replace=False) for _ in range(7)] + [[]]
        other = [lay for lay in a.unit_layers() if lay != layer][0]
        fixed = [(other, [0])]
        ref = a.lesion_engine(x, engine="reference", keep_bias=keep_bias).labels(layer, sets, fixed=fixed)
        fast = a.lesion_engine(x, engine="fast", keep_bias=keep_bias, batch_size=64)
        np.testing.assert_array_equal(fast.labels(layer, sets, fixed=fixed), ref, err_msg=layer)
        np.testing.assert_array_equal(fast.base_labels(), base)
        changed = changed or bool((ref != base).any())
    assert changed  # the lesions do change labels: equal outputs are not two no-ops


# ------------------------------------------------------------------------------------------ loading

def test_folder_loads_with_the_same_fingerprint(gpt2_dir):
    a = adapt(str(gpt2_dir))
    assert type(a).__name__ == "TransformersAdapter" and a.n_classes == 3 and a.input_shape == (2, None)
    assert a.fingerprint() == adapt(_gpt2()).fingerprint()
    check_model_file(gpt2_dir)  # no error


def _folder(tmp_path, cfg, files=("model.safetensors",)):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    for f in files:
        (d / f).write_bytes(b"\0" * 8)
    return d


def test_pickled_weights_are_refused_without_trust(tmp_path, gpt2_dir):
    d = _folder(tmp_path, json.loads((gpt2_dir / "config.json").read_text()), files=("pytorch_model.bin",))
    for call in (lambda: check_model_file(d), lambda: adapt(d)):
        with pytest.raises(UnsafeModelError, match=r"only pickles \(pytorch_model.bin\)") as err:
            call()
        assert "\n" not in str(err.value)


def test_pickled_weights_load_with_trust(tmp_path):
    m = _gpt2()
    d = tmp_path / "pkl"
    m.config.save_pretrained(d)
    torch.save(m.state_dict(), d / "pytorch_model.bin")
    assert adapt(d, trust=True).fingerprint() == adapt(m).fingerprint()


def test_remote_code_is_refused_without_trust(tmp_path, gpt2_dir):
    cfg = json.loads((gpt2_dir / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.Evil"}
    d = _folder(tmp_path, cfg)
    (d / "modeling_evil.py").write_text("raise SystemExit('ran code from the folder')\n")
    with pytest.raises(UnsafeModelError, match="remote code .auto_map: AutoModelForSequenceClassification") as err:
        adapt(d)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("cfg, match", [
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
     r"unsupported transformers model type 'llama' \(LlamaForCausalLM\); modtest reads gpt2 "
     r"\(GPT2ForSequenceClassification\), bert \(BertForSequenceClassification\), vit \(ViTForImageClassification\)"),
    ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]},
     "architecture GPT2LMHeadModel is not a classifier modtest reads; for model type 'gpt2' it reads "
     "GPT2ForSequenceClassification"),
])
def test_other_families_are_refused_by_name(tmp_path, cfg, match):
    d = _folder(tmp_path, cfg)
    with pytest.raises(ModelLoadError, match=match):
        check_model_file(d)


def test_an_unsupported_model_object_is_refused_by_name():
    import_transformers()  # triton kept out when TensorFlow is loaded
    from transformers import GPT2Config, GPT2LMHeadModel

    from modtest.errors import UnsupportedModelError

    lm = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=11, n_positions=8, use_cache=False))
    with pytest.raises(UnsupportedModelError, match="unsupported transformers model GPT2LMHeadModel; modtest reads "
                                                    "GPT2ForSequenceClassification, BertForSequenceClassification, "
                                                    "ViTForImageClassification"):
        adapt(lm)


def test_folder_without_weights_or_config(tmp_path, gpt2_dir):
    d = _folder(tmp_path, json.loads((gpt2_dir / "config.json").read_text()), files=())
    with pytest.raises(ModelLoadError, match=r"holds no weights \(\*.safetensors\)"):
        adapt(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="is a directory"):
        adapt(empty)


# ------------------------------------------------------------------------------------------ data

def test_npz_layout_and_one_line_errors(tmp_path):
    from modtest._validation import check_data, load_data

    a = adapt(_gpt2())
    ids = np.random.default_rng(0).integers(1, 20, size=(10, 6))
    p = tmp_path / "d.npz"
    np.savez(p, input_ids=ids, labels=np.arange(10) % 3)
    x, y = load_data(p)
    assert x.shape == (10, 2, 6) and (x[:, 0] == ids).all() and (x[:, 1] == 1).all()
    check_data(a, x, y)
    bad = [
        (dict(input_ids=ids + 0.5, labels=np.zeros(10)), "input_ids must hold integers"),
        (dict(input_ids=ids, attention_mask=np.ones((10, 5)), labels=np.zeros(10)),
         r"attention_mask has shape \(10, 5\) but input_ids has shape \(10, 6\)"),
        (dict(input_ids=ids), "has no array 'labels'"),
        (dict(input_ids=ids[0], labels=np.zeros(1)), r"input_ids has shape \(6,\); it must be \(N, T\)"),
    ]
    for arrays, match in bad:
        np.savez(p, **arrays)
        with pytest.raises(DataError, match=match):
            load_data(p)
    with pytest.raises(DataError, match=r"x has shape \(10, 6\): a text model reads \(N, 2, T\)"):
        check_data(a, ids, np.zeros(10, dtype=int))
    with pytest.raises(DataError, match=r"token ids must lie in \[0, 19\]"):
        check_data(a, np.stack([ids + 20, np.ones_like(ids)], 1), np.zeros(10, dtype=int))
    pad = np.stack([ids, np.ones_like(ids)], 1)
    pad[0, 1, -1] = 0  # masked but not the pad token
    with pytest.raises(DataError, match=r"must hold the pad token \(id 0\)"):
        check_data(a, pad, np.zeros(10, dtype=int))


def test_vit_pixel_values_npz_and_lesion_study(tmp_path):
    from modtest import cluster, lesion_study
    from modtest._validation import check_data, load_data

    a = adapt(_vit())
    p = tmp_path / "img.npz"
    np.savez(p, pixel_values=np.random.default_rng(0).normal(size=(12, 3, 8, 8)).astype(np.float32),
             labels=np.arange(12) % 3)
    x, y = check_data(a, *load_data(p))
    assert x.shape == (12, 3, 8, 8)
    res = lesion_study(a, cluster(a, k=3, seed=0), x, y, n_random=3, seed=0, max_fraction=1.0)
    assert res.rows and {r["block"] for r in res.rows} == {0}
    with pytest.raises(DataError, match=r"channels last"):
        check_data(a, x.transpose(0, 2, 3, 1), y)


# ------------------------------------------------------------------------------------------ end to end

def test_lesion_study_rows_say_kind_and_block():
    from modtest import cluster, lesion_study

    a = adapt(_gpt2())
    x = _tokens(n=30)
    y = np.arange(30) % 3
    part = cluster(a, k=3, seed=0)
    res = lesion_study(a, part, x, y, n_random=4, seed=0, max_fraction=1.0)
    assert len(res.rows) == len(part.subclusters)
    for row in res.rows:
        b, part = row["layer"].split(".")
        assert row["block"] == int(b[5:]) and row["unit_kind"] == {"attn": "head", "mlp": "neuron"}[part]
    assert {r["unit_kind"] for r in res.rows} == {"head", "neuron"}
    assert 0 <= res.network["importance"]["fisher_p"] <= 1


def test_cli_audit_of_a_folder_without_tensorflow(tmp_path, gpt2_dir):
    ids = np.random.default_rng(0).integers(1, 20, size=(30, 6))
    np.savez(tmp_path / "d.npz", input_ids=ids, attention_mask=np.ones_like(ids), labels=np.arange(30) % 3)
    code = ("import sys; from modtest.cli import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "audit", str(gpt2_dir), "--data", str(tmp_path / "d.npz"),
                          "--k", "3", "--n-random", "3", "--protocol", "paper", "--clusterability", "0",
                          "--no-fail", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "r.json").read_text())["subclusters"]
    assert rows and {r["unit_kind"] for r in rows} <= {"head", "neuron"} and all("block" in r for r in rows)
