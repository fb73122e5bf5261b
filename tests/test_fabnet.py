import numpy as np
import pytest
import torch
from torch import nn

from audio_utils import write_manifest_lines
from extractors import build_extractor
from extractors.fabnet import CHANNELS, FabNetEncoder, fabnet_encoder, load_fabnet
from imo_pipeline.errors import ConfigError
from imo_pipeline.extract import extract
from imo_pipeline.manifest import load_manifest
from imo_pipeline.store import open_store
from media_utils import moving_face_frames, write_frames_folder


class ReleasedModel(nn.Module):
    """The layout of a released FAb-Net model: the encoder beside decoders, trained under DataParallel."""

    def __init__(self):
        super().__init__()
        self.encoder = fabnet_encoder()
        self.decoder1 = nn.Sequential(nn.Conv2d(256, 128, 3, 1, 1), nn.BatchNorm2d(128))


def random_encoder(seed: int = 0) -> FabNetEncoder:
    torch.manual_seed(seed)
    enc = FabNetEncoder()
    for m in enc.modules():   # non-trivial batch-norm statistics, as a trained model has
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return enc.eval()


def save_released(path, enc: FabNetEncoder):
    model = ReleasedModel()
    model.encoder.load_state_dict(enc.encoder.state_dict())
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 100, "state_dict": sd}, path)
    return path


def test_architecture_is_the_fabnet_encoder():
    enc = fabnet_encoder()
    convs = [m for m in enc if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(CHANNELS) == [16, 32, 64, 128, 128, 128, 128, 256]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in enc) == 6
    assert {m.negative_slope for m in enc if isinstance(m, nn.LeakyReLU)} == {0.2}
    assert len(enc) == 21 and isinstance(enc[20], nn.Conv2d)        # indices of the released state dicts
    out = FabNetEncoder().eval()(torch.rand(2, 3, 256, 256))
    assert out.shape == (2, 256)


def test_released_layout_loads_back_with_identical_outputs(tmp_path):
    enc = random_encoder()
    x = torch.rand(3, 3, 256, 256)
    with torch.inference_mode():
        want = enc(x)
        for name, obj in {"released": None, "bare": enc.encoder.state_dict(), "encoder_only": enc.state_dict()}.items():
            path = tmp_path / f"{name}.pth"
            save_released(path, enc) if obj is None else torch.save(obj, path)
            assert torch.equal(load_fabnet(path).eval()(x), want), name


def test_bad_checkpoints_say_what_is_wrong(tmp_path):
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match=r"missing \['encoder.0.bias'.*unexpected \['conv.weight'\]"):
        load_fabnet(tmp_path / "other.pth")
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pth")    # a whole pickled module: refused, not executed
    with pytest.raises(ConfigError, match=r"holds the class torch.nn.modules.linear.Linear, which imo does not load"):
        load_fabnet(tmp_path / "pickled.pth")
    with pytest.raises(ConfigError, match="does not exist"):
        load_fabnet(tmp_path / "nope.pth")
    sd = random_encoder().state_dict()
    sd["encoder.0.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(ConfigError, match="shapes differ"):
        load_fabnet(tmp_path / "shape.pth")
    with pytest.raises(ConfigError, match="fabnet needs a checkpoint"):
        build_extractor("fabnet", "video")


def test_fabnet_extraction_from_frames_folders(tmp_path):
    ckpt = save_released(tmp_path / "fabnet.pth", random_encoder(1))
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
    assert store.meta.encoder["type"] == "fabnet" and store.meta.encoder["source"] == str(ckpt)
    for u in manifest:
        emb = store.get(u.id)
        assert emb.shape == ([3, 5, 2][int(u.id[1:])], 1, 256)
        np.testing.assert_allclose(emb.astype(np.float32), ext.embed([ext.load(u, manifest)])[0], atol=1e-3, rtol=1e-3)
    # the store's fingerprint follows the weights
    other = build_extractor(f"fabnet:{save_released(tmp_path / 'other.pth', random_encoder(2))}", "video")
    assert other.fingerprint() != ext.fingerprint()
