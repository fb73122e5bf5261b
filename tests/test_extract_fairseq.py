"""fairseq checkpoints read without fairseq: wav2vec (v1), wav2vec 2.0 / HuBERT, RoBERTa."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from audio_utils import tone, write_manifest_lines
from extractors import build_extractor
from extractors.fairseq_ckpt import literal_layers, read_fairseq_checkpoint
from extractors.fairseq_models import FairseqRobertaTokenizer
from fairseq_utils import (MERGES, random_wav2vec, roberta_fixture, save_fairseq, save_fairseq_roberta,
                           save_fairseq_w2v2, tiny_hf_speech, w2v2_fixture, wav2vec_args, wav2vec_fixture)
from imo_pipeline.errors import ConfigError
from imo_pipeline.extract import extract
from imo_pipeline.manifest import load_manifest
from imo_pipeline.safe_load import load_checkpoint
from imo_pipeline.store import open_store
from media_utils import CORPUS


class Boom:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _imo(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "imo_pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          env=env)


# --- wav2vec (v1) ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["large", "base"])
def test_wav2vec_checkpoint_matches_the_fairseq_module(tmp_path, config):
    args = wav2vec_args(config, width=16)
    ref = random_wav2vec(args, seed=1)
    path = save_fairseq(tmp_path / "wav2vec.pt", ref.state_dict(), args, legacy=config == "large")
    ext = build_extractor(f"fairseq:{path}", "audio", layers="z,c", device="cpu")
    assert (ext.family, ext.config.kind, ext.layer_names, ext.layers) == ("fairseq-audio", "wav2vec", ("z", "c"), [0, 1])
    assert (ext.frame_rate, ext.dim, ext.batching, ext.config.normalize) == (100.0, 16, "equal", False)
    assert ext.config.left_out == ["wav2vec_predictions"]
    waves = [tone(1.3, 16000, seed=3)[:, 0], tone(0.7, 16000, 300, seed=4)[:, 0]]
    got = ext.embed(waves)
    with torch.inference_mode():
        for w, g in zip(waves, got):
            z, c = ref(torch.from_numpy(w)[None])                          # fairseq's forward: (1, C, T) each
            want = torch.stack([z[0].T, c[0].T], dim=1).numpy()            # (T, 2, C)
            assert g.shape == want.shape and g.shape[0] == len(w) // 160 - 2
            np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)
    # c alone (the usual feature, and "last"), by name
    assert build_extractor(f"fairseq:{path}", "audio", layers="c").layers == [1]
    assert build_extractor(f"fairseq:{path}", "audio").layers == [1]
    with pytest.raises(ConfigError, match="or the names z, c"):
        build_extractor(f"fairseq:{path}", "audio", layers="q")


@pytest.mark.slow
def test_wav2vec_large_real_size_frame_rate(tmp_path):
    """The released wav2vec_large.pt's exact shapes (512 wide) load; 100 frames/s, causal context."""
    args = wav2vec_args("large", width=512)
    ref = random_wav2vec(args, seed=2)
    path = save_fairseq(tmp_path / "wav2vec_large.pt", ref.state_dict(), args)
    ext = build_extractor(f"fairseq:{path}", "audio", device="cpu")
    w = tone(0.5, 16000, seed=5)[:, 0]
    (got,) = ext.embed([w])
    with torch.inference_mode():
        _, c = ref(torch.from_numpy(w)[None])
    assert got.shape == (48, 1, 512) and ext.frame_rate == 100.0
    np.testing.assert_allclose(got[:, 0], c[0].T.numpy(), rtol=1e-4, atol=1e-4)


def test_disallowed_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    args = wav2vec_args("base", width=8)
    path = save_fairseq(tmp_path / "evil.pt", random_wav2vec(args).state_dict(), args,
                        extra_state={"train_meters": Boom(marker)})
    with pytest.raises(ConfigError) as e:
        build_extractor(f"fairseq:{path}", "audio")
    msg = str(e.value)
    assert "holds the class posix.system" in msg and "weights-only copy" in msg and "\n" not in msg
    assert "weights_only=False" not in msg
    assert not marker.exists()
    (tmp_path / "m.jsonl").write_text('{"id": "a", "label": "x", "audio": "a.wav"}\n')
    r = _imo("extract", "-m", "audio", "--manifest", "m.jsonl", "--encoder", f"fairseq:{path}", "--out", "s.zarr",
             cwd=tmp_path)
    assert r.returncode == 2 and "error: fairseq checkpoint" in r.stderr and "posix.system" in r.stderr
    assert "Traceback" not in r.stderr and not marker.exists() and not (tmp_path / "s.zarr").exists()


def test_bad_fairseq_checkpoints_say_what_is_wrong(tmp_path):
    args = wav2vec_args("base", width=8)
    sd = random_wav2vec(args).state_dict()
    torch.save({"model": sd}, tmp_path / "noargs.pt")
    with pytest.raises(ConfigError, match="neither 'args'.*nor 'cfg'"):
        build_extractor(f"fairseq:{tmp_path / 'noargs.pt'}", "audio")
    save_fairseq(tmp_path / "vq.pt", sd, wav2vec_args("base", width=8, vq_type="gumbel"))
    with pytest.raises(ConfigError, match="vq-wav2vec is not supported"):
        build_extractor(f"fairseq:{tmp_path / 'vq.pt'}", "audio")
    save_fairseq(tmp_path / "wide.pt", sd, wav2vec_args("base", width=12))     # args that do not fit the weights
    with pytest.raises(ConfigError, match="does not fit the model its stored options describe"):
        build_extractor(f"fairseq:{tmp_path / 'wide.pt'}", "audio")
    save_fairseq(tmp_path / "lm.pt", sd, argparse.Namespace(arch="transformer_lm"))
    with pytest.raises(ConfigError, match="architecture 'transformer_lm' is not one imo reads"):
        build_extractor(f"fairseq:{tmp_path / 'lm.pt'}", "audio")
    path = save_fairseq(tmp_path / "w.pt", sd, args)
    with pytest.raises(ConfigError, match="is a wav2vec audio model; extract it with --modality audio"):
        build_extractor(f"fairseq:{path}", "text")
    with pytest.raises(ConfigError, match="fairseq checkpoints have no video family"):
        build_extractor(f"fairseq:{path}", "video")
    with pytest.raises(ConfigError, match="does not exist"):
        build_extractor(f"fairseq:{tmp_path / 'nope.pt'}", "audio")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds 0 .pt files"):
        build_extractor(f"fairseq:{tmp_path / 'empty'}", "audio")
    with pytest.raises(ConfigError, match="is a wav2vec model, not the hubert recorded"):
        build_extractor({"type": "fairseq-audio", "source": str(path), "kind": "hubert"}, "audio")


def test_layer_specs_are_read_without_eval():
    assert literal_layers("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2", "x") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    for bad in ("__import__('os').system('true')", "[(1, 2)]", "[(a, 1, 1)]", "[]"):
        with pytest.raises(ConfigError, match="not a list of"):
            literal_layers(bad, "conv_feature_layers")


# --- wav2vec 2.0 / HuBERT -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,norm,stable,layout", [
    ("wav2vec2", "group", False, "args"),        # wav2vec_small.pt
    ("wav2vec2", "layer", True, "cfg"),          # large-lv60 style, hydra-era plain-dict cfg
    ("wav2vec2", "group", False, "ctc"),         # fine-tuned wav2vec_ctc, CTC head left out
    ("hubert", "group", False, "cfg"),           # hubert_base_ls960.pt
    ("hubert", "layer", True, "omegaconf"),      # a pickled omegaconf DictConfig
])
def test_w2v2_and_hubert_equal_the_transformers_model(tmp_path, kind, norm, stable, layout):
    if layout == "omegaconf":
        pytest.importorskip("omegaconf", reason="omegaconf (the [fairseq] extra) is not installed")
    hf = tiny_hf_speech(kind, norm, stable, seed=2)
    path = save_fairseq_w2v2(tmp_path / "ck.pt", hf, kind, layout, normalize=stable)
    ck = read_fairseq_checkpoint(path)
    assert ck.arch == kind and (ck.finetuned_from == "wav2vec_ctc") == (layout == "ctc")
    ext = build_extractor(f"fairseq:{path}", "audio", layers="all", device="cpu")
    assert (ext.config.kind, ext.frame_rate, ext.dim, ext.layers) == (kind, 50.0, 32, [0, 1, 2])
    assert ext.batching == ("mask" if norm == "layer" else "equal") and ext.config.normalize == stable
    assert type(ext.model) is type(hf)
    left = ext.config.left_out
    assert (("label_embs_concat" in left and "final_proj" in left) if kind == "hubert" else "quantizer" in left)
    assert ("w2v_encoder.proj (fine-tuned wav2vec_ctc head)" in left) == (layout == "ctc")
    waves = [tone(1.0, 16000, seed=6)[:, 0], tone(0.55, 16000, 250, seed=7)[:, 0]]
    got = ext.embed(waves)
    with torch.inference_mode():
        for w, g in zip(waves, got):
            x = torch.from_numpy(w)[None]
            if stable:
                x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
            want = torch.stack(hf(x, output_hidden_states=True).hidden_states, dim=2)[0].numpy()
            np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4)


def test_omegaconf_checkpoint_without_omegaconf_names_the_extra(tmp_path, monkeypatch):
    pytest.importorskip("omegaconf", reason="omegaconf (the [fairseq] extra) is needed to write the checkpoint")
    import extractors.fairseq_ckpt as fc

    path = save_fairseq_w2v2(tmp_path / "ck.pt", tiny_hf_speech("hubert"), "hubert", "omegaconf")
    monkeypatch.setattr(fc, "omegaconf_classes", lambda: [])           # as where omegaconf is not installed
    with pytest.raises(ConfigError, match=r"holds the class omegaconf\..*pip install 'imo-pipeline\[fairseq\]'"):
        build_extractor(f"fairseq:{path}", "audio")


# --- RoBERTa ----------------------------------------------------------------------------------------------

def test_gpt2_bpe_and_dictionary_give_fairseq_ids(tmp_path):
    """fairseq: roberta.encode(s) = Dictionary.encode_line('<s> ' + GPT2BPE.encode(s) + ' </s>')."""
    _, _, ids = save_fairseq_roberta(tmp_path)
    tok = FairseqRobertaTokenizer(tmp_path / "encoder.json", tmp_path / "vocab.bpe", tmp_path / "dict.txt")
    vocab = json.loads((tmp_path / "encoder.json").read_text())
    # BPE by hand with the merges (rank order): "the" t,h,e -(h e)-> t,he -(t he)-> the;
    # " cat" Ġ,c,a,t -(a t)-> Ġ,c,at -(Ġ c)-> Ġc,at -(Ġc at)-> Ġcat; "é" is the bytes Ã © -(Ã ©)-> Ã©;
    # two spaces before a word: the regex gives " " (\s+(?!\S)) and " world"; "z" and "q" are not in dict.txt
    expected = {
        "the cat": ["the", "Ġcat"],
        "The cat's café": ["T", "he", "Ġcat", "'s", "Ġc", "a", "f", "Ã©"],
        "hello  world!": ["he", "l", "lo", "Ġ", "Ġw", "or", "l", "d", "!"],
        "quiz 42": ["q", "u", "i", "z", "Ġ", "4", "2"],
    }
    for text, pieces in expected.items():
        assert tok.gpt2_ids(text) == [vocab[p] for p in pieces], text
        dict_ids = [ids.get(vocab[p], 3) for p in pieces]
        assert tok.encode(text) == [0] + dict_ids + [2], text
    assert tok.encode("quiz")[1] == 3 and tok.encode("quiz")[4] == 3          # q, z -> <unk>
    # and GPT-2 ids agree with an independent byte-level BPE (the tokenizers library) on more text
    from tokenizers import ByteLevelBPETokenizer

    ref = ByteLevelBPETokenizer(str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe"), add_prefix_space=False)
    for text in CORPUS + ["Hello,   World!!  ", "naïve café\tété 2024", "it's   the\n\nend ", "  lead"]:
        assert tok.gpt2_ids(text) == ref.encode(text).ids, text
    assert len(MERGES) == len(tok.bpe_ranks)


@pytest.mark.parametrize("split_qkv", [False, True])
def test_roberta_equals_the_fairseq_encoder(tmp_path, split_qkv):
    path, ref, _ = save_fairseq_roberta(tmp_path, seed=3, split_qkv=split_qkv)
    ext = build_extractor(f"fairseq:{path}", "text", layers="all", device="cpu")
    assert (ext.family, ext.config.kind, ext.dim, ext.layers, ext.max_tokens) == ("fairseq-text", "roberta", 32,
                                                                                  [0, 1, 2], 64)
    batch = [ext._ids(s)[0] for s in CORPUS[:4] + ["the cat's café"]]
    got = ext.embed(batch)                                         # one padded batch
    with torch.inference_mode():
        for ids, g in zip(batch, got):
            want = torch.stack(ref(torch.tensor([ids])), dim=2)[0].numpy()     # (T, 3, D), fairseq's inner states
            np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4)
            assert ids[0] == 0 and ids[-1] == 2


def test_roberta_files_must_belong_together(tmp_path):
    path, _, _ = save_fairseq_roberta(tmp_path)
    (tmp_path / "vocab.bpe").rename(tmp_path / "vocab.bpe.away")
    with pytest.raises(ConfigError, match="fairseq RoBERTa needs vocab.bpe"):
        build_extractor(f"fairseq:{tmp_path}", "text")
    (tmp_path / "vocab.bpe.away").rename(tmp_path / "vocab.bpe")
    (tmp_path / "dict.txt").write_text("5 10\n6 9\n")
    with pytest.raises(ConfigError, match="gives 6 symbols but the checkpoint embeds"):
        build_extractor(f"fairseq:{tmp_path}", "text")
    (tmp_path / "dict.txt").write_text("5 10\n5 9\n")
    with pytest.raises(ConfigError, match="duplicate token '5'"):
        build_extractor(f"fairseq:{tmp_path}", "text")
    with pytest.raises(ConfigError, match="is a RoBERTa text model; extract it with --modality text"):
        build_extractor(f"fairseq:{path}", "audio")
    cp = load_checkpoint(path, "test", allow=[argparse.Namespace])   # a pre-norm variant (final layer_norm)
    cp["model"]["decoder.sentence_encoder.layer_norm.weight"] = torch.ones(32)
    torch.save(cp, path)
    (tmp_path / "dict.txt").unlink()
    save_fairseq_roberta(tmp_path / "again")
    (tmp_path / "again" / "dict.txt").rename(tmp_path / "dict.txt")
    with pytest.raises(ConfigError, match=r"weights \['layer_norm.weight'\] have no place"):
        build_extractor(f"fairseq:{path}", "text")


# --- end to end through imo extract ---------------------------------------------------------------------------

def _audio_manifest(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    import soundfile as sf

    lines = []
    for i, sec in enumerate([0.8, 1.3, 0.8, 2.1]):
        sf.write(media / f"a{i}.wav", tone(sec, 16000, 150 + 40 * i, seed=i), 16000)
        lines.append({"id": f"a{i}", "label": "neu", "audio": f"media/a{i}.wav"})
    lines.append({"id": "blip", "label": "neu", "audio": "media/blip.wav"})
    sf.write(media / "blip.wav", tone(0.01, 16000), 16000)            # 160 samples: less than one frame
    return write_manifest_lines(tmp_path / "m.jsonl", lines)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["wav2vec", "hubert"])
def test_cli_extract_fairseq_audio(tmp_path, family):
    _audio_manifest(tmp_path)
    enc, opts = wav2vec_fixture(tmp_path / "ck") if family == "wav2vec" else w2v2_fixture(tmp_path / "ck", "hubert")
    layers = "z,c" if family == "wav2vec" else opts["layers"]
    r = _imo("extract", "-m", "audio", "--manifest", "m.jsonl", "--encoder", enc, "--layers", layers,
             "--out", "a.zarr", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1, r.stderr                                  # one utterance failed: the blip
    assert "done 4, already present 0, failed 1" in r.stdout
    reasons = [json.loads(x) for x in open(tmp_path / "a.errors.jsonl")]
    assert reasons[0]["id"] == "blip" and "fewer than the" in reasons[0]["reason"]
    store = open_store(tmp_path / "a.zarr")
    meta = store.meta.encoder
    assert meta["type"] == "fairseq-audio" and meta["kind"] == family and store.meta.frame_rate == (
        100.0 if family == "wav2vec" else 50.0)
    ext = build_extractor(meta, "audio", device="cpu")                 # the store's config rebuilds the encoder
    manifest = load_manifest(tmp_path / "m.jsonl")
    for u in manifest.utterances[:4]:
        emb = store.get(u.id)
        assert np.isfinite(emb.astype(np.float32)).all()
        np.testing.assert_allclose(emb.astype(np.float32), ext.embed([ext.load(u, manifest)])[0], atol=2e-3, rtol=2e-3)
    assert store.get("a1").shape[1] == (2 if family == "wav2vec" else 3)


@pytest.mark.slow
def test_cli_extract_fairseq_roberta(tmp_path):
    enc, opts = roberta_fixture(tmp_path / "roberta")
    lines = [{"id": f"t{i}", "label": "neu", "text": s} for i, s in enumerate(CORPUS)]
    lines += [{"id": "long", "label": "neu", "text": " ".join(CORPUS * 3)}, {"id": "empty", "label": "neu", "text": ""}]
    write_manifest_lines(tmp_path / "m.jsonl", lines)
    r = _imo("extract", "-m", "text", "--manifest", "m.jsonl", "--encoder", enc, "--layers", opts["layers"],
             "--out", "t.zarr", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert f"done {len(CORPUS) + 1}, already present 0, failed 1" in r.stdout
    store = open_store(tmp_path / "t.zarr")
    meta = store.meta.encoder
    assert meta["type"] == "fairseq-text" and meta["kind"] == "roberta"
    assert meta["dictionary"] == str(tmp_path / "roberta" / "dict.txt")
    ext = build_extractor(meta, "text", device="cpu")
    manifest = load_manifest(tmp_path / "m.jsonl")
    for u in manifest.utterances[:-1]:
        ids = ext.load(u, manifest)
        np.testing.assert_allclose(store.get(u.id).astype(np.float32), ext.embed([ids])[0], atol=2e-3, rtol=2e-3)
    assert store.get("long").shape == (64, 3, 32)                     # truncated to the 64 positions, noted
    # a different dict.txt changes the ids, so it changes the fingerprint too
    before = ext.fingerprint()
    d = tmp_path / "roberta" / "dict.txt"
    lines = d.read_text().splitlines()
    d.write_text("\n".join([lines[1], lines[0]] + lines[2:]) + "\n")
    assert build_extractor(meta, "text", device="cpu").fingerprint() != before
