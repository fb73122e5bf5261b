import argparse
import os

import numpy as np
import pytest
import torch
from torch import nn

from audio_utils import write_manifest_lines
from extractors import build_extractor
from extractors.fabnet import NARROW, RELEASED, FabNetEncoder, fabnet_encoder, load_fabnet
from imo_pipeline.errors import ConfigError
from imo_pipeline.extract import extract
from imo_pipeline.manifest import load_manifest
from imo_pipeline.store import open_store
from media_utils import moving_face_frames, write_frames_folder


class FrontaliseModelMasksWider(nn.Module):
    """``FrontaliseModelMasks_wider`` of FAb-Net's ``models_multiview.py``, re-implemented from the original code.

    Same module tree (``encoder``, ``decoder``, ``mask``), same layer order and
    the same shared in-place LeakyReLU object, so its state dict has the released
    files' key names and shapes; ``encoder`` is the original encoder to compare with.
    """

    def __init__(self, input_nc=3, inner_nc=128, num_additional_ids=0):
        super().__init__()
        self.encoder = self.generate_encoder_layers(output_size=inner_nc, num_filters=num_additional_ids)
        self.decoder = self.generate_decoder_layers(inner_nc * 2, num_filters=num_additional_ids)
        self.mask = self.generate_decoder_layers(inner_nc * 2, num_output_channels=1, num_filters=num_additional_ids)

    @staticmethod
    def generate_encoder_layers(output_size=128, num_filters=64):
        f = num_filters
        conv1, conv2, conv3 = nn.Conv2d(3, f, 4, 2, 1), nn.Conv2d(f, f * 2, 4, 2, 1), nn.Conv2d(f * 2, f * 4, 4, 2, 1)
        conv4, conv5 = nn.Conv2d(f * 4, f * 8, 4, 2, 1), nn.Conv2d(f * 8, f * 8, 4, 2, 1)
        conv6, conv7 = nn.Conv2d(f * 8, f * 8, 4, 2, 1), nn.Conv2d(f * 8, f * 8, 4, 2, 1)
        conv8 = nn.Conv2d(f * 8, output_size, 4, 2, 1)
        bn2_0, bn4_0 = nn.BatchNorm2d(f * 2), nn.BatchNorm2d(f * 4)
        bn8_0, bn8_1, bn8_2, bn8_3 = (nn.BatchNorm2d(f * 8) for _ in range(4))
        leaky_relu = nn.LeakyReLU(0.2, True)
        return nn.Sequential(conv1, leaky_relu, conv2, bn2_0, leaky_relu, conv3, bn4_0, leaky_relu,
                             conv4, bn8_0, leaky_relu, conv5, bn8_1, leaky_relu, conv6, bn8_2,
                             leaky_relu, conv7, bn8_3, leaky_relu, conv8)

    @staticmethod
    def generate_decoder_layers(num_input_channels, num_output_channels=2, num_filters=32):
        f = num_filters
        up = lambda: nn.Upsample(scale_factor=2, mode="bilinear")  # noqa: E731
        dconv = [nn.Conv2d(num_input_channels, f * 8, 3, 1, 1), nn.Conv2d(f * 8, f * 8, 3, 1, 1),
                 nn.Conv2d(f * 8, f * 8, 3, 1, 1), nn.Conv2d(f * 8, f * 8, 3, 1, 1), nn.Conv2d(f * 8, f * 4, 3, 1, 1),
                 nn.Conv2d(f * 4, f * 2, 3, 1, 1), nn.Conv2d(f * 2, f, 3, 1, 1), nn.Conv2d(f, num_output_channels, 3, 1, 1)]
        bn = [nn.BatchNorm2d(c) for c in (f * 8, f * 8, f * 8, f * 8, f * 4, f * 2, f)]
        relu = nn.ReLU()
        return nn.Sequential(relu, up(), dconv[0], bn[0], relu, up(), dconv[1], bn[1], relu,
                             up(), dconv[2], bn[2], relu, up(), dconv[3], bn[3], relu, up(), dconv[4], bn[4],
                             relu, up(), dconv[5], bn[5], relu, up(), dconv[6], bn[6],
                             relu, up(), dconv[7], nn.Tanh())


def original_model(width: int = 32, inner_nc: int = 256, seed: int = 0) -> FrontaliseModelMasksWider:
    """A random-init original model with non-trivial batch-norm statistics, as a trained one has."""
    torch.manual_seed(seed)
    model = FrontaliseModelMasksWider(3, inner_nc=inner_nc, num_additional_ids=width)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def affectnet_classifier(dim: int = 256) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm1d(dim), nn.Linear(dim, 8, bias=False))


def save_released(path, model: nn.Module, form: str = "released", legacy: bool = False):
    """``form``: ``released`` (model under state_dict_model, AffectNet classifier under state_dict) or
    ``training`` (model under state_dict beside the optimizer state and the options Namespace)."""
    inner = model.encoder[20].out_channels
    if form == "released":
        obj = {"state_dict_model": model.state_dict(), "state_dict": affectnet_classifier(inner).state_dict(),
               "epoch": 26}
    else:
        opt = argparse.Namespace(lr=1e-4, num_additional_ids=32, embedding_size=inner, minpercentile=0.1,
                                 maxpercentile=0.85)
        obj = {"state_dict": model.state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
               "epoch": 360, "lr": 1e-4, "momentum": 0.9, "opts": opt}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def fabnet_fixture(folder, width: int = 4) -> tuple[str, dict]:
    """A tiny FAb-Net checkpoint in the released layout (``FrontaliseModelMasks_wider(3, inner_nc=32,
    num_additional_ids=width)`` under ``state_dict_model``, classifier under ``state_dict``) in ``folder``:
    returns the ``--encoder`` string and extraction options (contract-test hook)."""
    os.makedirs(folder, exist_ok=True)
    path = save_released(os.path.join(folder, "fabnet_tiny.pth"), original_model(width, inner_nc=32))
    return f"fabnet:{path}", {"face": False, "fps": 5.0}


def test_architecture_is_the_fabnet_encoder():
    for widths in (RELEASED, NARROW):
        enc = fabnet_encoder(widths)
        convs = [m for m in enc if isinstance(m, nn.Conv2d)]
        assert [c.out_channels for c in convs] == list(widths)
        assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
        assert sum(isinstance(m, nn.BatchNorm2d) for m in enc) == 6
        assert {m.negative_slope for m in enc if isinstance(m, nn.LeakyReLU)} == {0.2}
        assert len(enc) == 21 and isinstance(enc[20], nn.Conv2d)        # indices of the released state dicts
    assert RELEASED == (32, 64, 128, 256, 256, 256, 256, 256) and NARROW == (16, 32, 64, 128, 128, 128, 128, 256)
    # the original class's encoder has the same keys and shapes as ours
    orig = {k: v.shape for k, v in FrontaliseModelMasksWider(3, 256, 32).encoder.state_dict().items()}
    assert orig == {k: v.shape for k, v in fabnet_encoder(RELEASED).state_dict().items()}
    assert FabNetEncoder().eval()(torch.rand(2, 3, 256, 256)).shape == (2, 256)


@pytest.mark.parametrize("form", ["released", "training"])
def test_released_layouts_equal_the_original_encoder(tmp_path, form):
    """Both released layouts (32-wide), zip and legacy serialisation, load and equal the original forward."""
    model = original_model(32, seed=1)
    x = torch.rand(3, 3, 256, 256)
    with torch.inference_mode():
        want = model.encoder(x.clone()).flatten(1)                      # (3, 256), the original definition
        for legacy in (False, True):
            path = save_released(tmp_path / f"{form}{legacy}.pth", model, form, legacy)
            enc = load_fabnet(path).eval()
            assert enc.channels == RELEASED
            assert torch.equal(enc(x), want)
    if form == "released":
        assert enc.source_key == "'state_dict_model'"
        assert enc.ignored == ["decoder (beside the encoder under 'state_dict_model')",
                               "mask (beside the encoder under 'state_dict_model')",
                               "classifier under 'state_dict' (BatchNorm1d(256) + Linear(256, 8, bias=False))"]
    else:
        assert enc.source_key == "'state_dict'" and enc.ignored[:2] == [
            "decoder (beside the encoder under 'state_dict')", "mask (beside the encoder under 'state_dict')"]


def test_other_layouts_and_the_16_wide_encoder(tmp_path):
    model = original_model(16, seed=2)                 # FrontaliseModelMasks' 16-wide encoder, 256-d output
    x = torch.rand(2, 3, 256, 256)
    with torch.inference_mode():
        want = model.encoder(x.clone()).flatten(1)
        dp = {f"module.{k}": v for k, v in model.state_dict().items()}          # saved under DataParallel
        enc_only = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
        old = {k: v for k, v in enc_only.items() if not k.endswith("num_batches_tracked")}   # torch < 0.4.1
        for name, obj in {"dataparallel": {"epoch": 3, "state_dict": dp}, "bare": model.encoder.state_dict(),
                          "encoder_only": enc_only, "pre_0.4.1": {"state_dict_model": old}}.items():
            torch.save(obj, tmp_path / f"{name}.pth")
            enc = load_fabnet(tmp_path / f"{name}.pth").eval()
            assert enc.channels == NARROW, name
            assert torch.equal(enc(x), want), name


def test_bad_checkpoints_say_what_is_wrong(tmp_path):
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match=r"holds no FAb-Net encoder .*found \['state_dict'\]"):
        load_fabnet(tmp_path / "other.pth")
    torch.save({"state_dict": affectnet_classifier().state_dict()}, tmp_path / "classifier.pth")
    with pytest.raises(ConfigError, match="holds no FAb-Net encoder"):    # the classifier alone is no encoder
        load_fabnet(tmp_path / "classifier.pth")
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pth")    # a whole pickled module: refused, not executed
    with pytest.raises(ConfigError, match=r"holds the class torch.nn.modules.linear.Linear, which imo does not load"):
        load_fabnet(tmp_path / "pickled.pth")
    with pytest.raises(ConfigError, match="does not exist"):
        load_fabnet(tmp_path / "nope.pth")
    sd = original_model(4, inner_nc=32).state_dict()
    sd["encoder.0.weight"] = torch.zeros(4, 3, 3, 3)
    torch.save(sd, tmp_path / "kernel.pth")
    with pytest.raises(ConfigError, match=r"'encoder.0.weight' is \(4, 3, 3, 3\), not the 4x4 convolution"):
        load_fabnet(tmp_path / "kernel.pth")
    sd = original_model(4, inner_nc=32).state_dict()
    sd["encoder.3.weight"] = torch.zeros(5)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(ConfigError, match="shapes differ"):
        load_fabnet(tmp_path / "shape.pth")
    sd = original_model(4, inner_nc=32).state_dict()
    del sd["encoder.6.running_var"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match=r"missing \['encoder.6.running_var'\]"):
        load_fabnet(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="fabnet needs a checkpoint"):
        build_extractor("fabnet", "video")


def test_fabnet_extraction_from_frames_folders(tmp_path):
    ckpt = save_released(tmp_path / "fabnet.pth", original_model(32, seed=3))
    lines = []
    for i, n in enumerate([3, 5, 2]):
        write_frames_folder(tmp_path / f"f{i}", moving_face_frames(n, size=200))
        lines.append({"id": f"u{i}", "label": "neu", "frames": f"f{i}"})
    manifest = load_manifest(write_manifest_lines(tmp_path / "m.jsonl", lines))
    ext = build_extractor(f"fabnet:{ckpt}", "video", device="cpu")
    assert (ext.dim, ext.layers, ext.frame_rate, ext.config.crop_size) == (256, [0], 5.0, 256)
    result = extract(manifest, ext, tmp_path / "v.zarr", budget=8, progress=False)
    assert (result.done, result.failed, result.notes) == (3, {}, {})
    store = open_store(tmp_path / "v.zarr")
    meta = store.meta.encoder
    assert meta["type"] == "fabnet" and meta["source"] == str(ckpt) and meta["encoder_widths"] == list(RELEASED)
    assert any(s.startswith("classifier under 'state_dict'") for s in meta["ignored"])   # said in the store
    for u in manifest:
        emb = store.get(u.id)
        assert emb.shape == ([3, 5, 2][int(u.id[1:])], 1, 256)
        np.testing.assert_allclose(emb.astype(np.float32), ext.embed([ext.load(u, manifest)])[0], atol=1e-3, rtol=1e-3)
    # the store's config rebuilds the same extractor; the fingerprint follows the weights
    again = build_extractor(meta, "video", device="cpu")
    assert again.fingerprint() == ext.fingerprint()
    other = build_extractor(f"fabnet:{save_released(tmp_path / 'other.pth', original_model(32, seed=4))}", "video")
    assert other.fingerprint() != ext.fingerprint()
    with pytest.raises(ConfigError, match="has encoder widths"):
        build_extractor({**meta, "encoder_widths": list(NARROW)}, "video")


def test_tiny_fixture_runs(tmp_path):
    enc, opts = fabnet_fixture(tmp_path / "fx")
    ext = build_extractor(enc, "video", device="cpu", **opts)
    assert (ext.dim, ext.config.encoder_widths) == (32, [4, 8, 16, 32, 32, 32, 32, 32])
