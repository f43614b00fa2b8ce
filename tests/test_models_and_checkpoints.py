import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from ldm.checkpoint import fingerprint, load_checkpoint, load_model, save_checkpoint, save_model
from ldm.classifier import Classifier, ClassifierConfig
from ldm.errors import LdmError
from ldm.nn import timestep_embedding
from ldm.unet import UNet, UNetConfig
from ldm.vae import VAE, VAEConfig, vae_loss

TINY_UNET = UNetConfig(in_channels=4, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)


def test_timestep_embedding_values():
    emb = timestep_embedding(torch.tensor([0, 10, 999]), 16)
    assert emb.shape == (3, 16)
    assert torch.equal(emb[0], torch.cat([torch.ones(8), torch.zeros(8)]))  # cos 0 = 1, sin 0 = 0
    # first frequency is 1: cos(t), sin(t)
    assert emb[1, 0].item() == pytest.approx(torch.cos(torch.tensor(10.0)).item(), abs=1e-6)
    assert emb[1, 8].item() == pytest.approx(torch.sin(torch.tensor(10.0)).item(), abs=1e-6)


@pytest.mark.parametrize("size", [7, 8, 14])
def test_unet_output_shape_equals_input_shape(size):
    unet = UNet(TINY_UNET)
    x = torch.randn(3, 4, size, size)
    assert unet(x, torch.tensor([0, 500, 999])).shape == x.shape


def test_unet_depends_on_time():
    unet = UNet(TINY_UNET)
    for p in unet.parameters():  # leave the zero-initialised output layer's zeros behind
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 4, 7, 7)
    assert not torch.allclose(unet(x, torch.tensor([0, 0])), unet(x, torch.tensor([900, 900])))


def test_vae_and_classifier_shapes():
    vae = VAE(VAEConfig(latent_channels=4, channels=(8, 16)))
    x = torch.rand(5, 1, 28, 28)
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (5, 4, 7, 7)
    assert vae.decode(mean).shape == x.shape
    assert Classifier(ClassifierConfig()).features(x).shape == (5, 128)


def test_vae_loss_is_the_negative_elbo_in_closed_form():
    """KL(N(μ, σ²) || N(0, I)) summed over latent dimensions (torch.distributions' closed form),
    and the Bernoulli negative log-likelihood of the pixels given the decoder's logits of
    z = μ + σ·ε, both averaged over images."""
    torch.manual_seed(0)
    vae = VAE(VAEConfig(latent_channels=4, channels=(8, 16)))
    x, noise = torch.rand(5, 1, 28, 28), torch.randn(5, 4, 7, 7)
    recon, kl = vae_loss(vae, x, noise)
    mean, logvar = vae.encode(x)
    posterior = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    expected_kl = torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0)).sum() / len(x)
    torch.testing.assert_close(kl, expected_kl)
    p = torch.sigmoid(vae.decoder(mean + (0.5 * logvar).exp() * noise))
    expected_recon = -(x * p.log() + (1 - x) * (1 - p).log()).sum() / len(x)
    torch.testing.assert_close(recon, expected_recon, rtol=1e-4, atol=1e-3)


def test_save_load_round_trip_gives_the_same_outputs(tmp_path):
    unet = UNet(TINY_UNET).eval()
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.1)
    fp = save_model(tmp_path / "u.safetensors", unet, {"note": "x"},
                    extra_tensors={"raw/dummy": torch.zeros(2)})
    loaded, ckpt = load_model(tmp_path / "u.safetensors", UNet)
    assert ckpt.fingerprint == fp and ckpt.info == {"note": "x"} and loaded.config == unet.config
    x, t = torch.randn(2, 4, 7, 7), torch.tensor([3, 700])
    torch.testing.assert_close(loaded(x, t), unet(x, t), rtol=1e-5, atol=1e-5)


def test_wrong_kind_is_refused(tmp_path):
    save_model(tmp_path / "c.safetensors", Classifier(ClassifierConfig()))
    with pytest.raises(LdmError, match="is a 'classifier' checkpoint, expected a 'vae' checkpoint"):
        load_model(tmp_path / "c.safetensors", VAE)


def tampered_unet_file(path, edit_tensors=lambda tensors: tensors, **config_changes):
    """A UNet checkpoint rewritten by hand: tensors and/or config changed, the old fingerprint kept."""
    save_model(path, UNet(TINY_UNET))
    ckpt = load_checkpoint(path, "unet")
    metadata = {"kind": "unet", "config": json.dumps(dict(ckpt.config, **config_changes)), "info": "{}",
                "fingerprint": ckpt.fingerprint}
    save_file(edit_tensors(dict(ckpt.tensors)), str(path), metadata=metadata)
    return path


def test_config_that_does_not_match_the_tensors_is_refused(tmp_path):
    path = tmp_path / "u.safetensors"
    save_checkpoint(path, UNet(TINY_UNET).state_dict(), "unet", dict(dataclasses.asdict(TINY_UNET), base_channels=16))
    with pytest.raises(LdmError, match="config does not match its tensors"):
        load_model(path, UNet)


def test_edited_metadata_fails_the_fingerprint(tmp_path):
    path = tampered_unet_file(tmp_path / "u.safetensors", base_channels=16)
    with pytest.raises(LdmError, match="tensors or metadata do not match the fingerprint"):
        load_model(path, UNet)
    save_model(tmp_path / "v.safetensors", UNet(TINY_UNET))
    ckpt = load_checkpoint(tmp_path / "v.safetensors", "unet")
    metadata = {"kind": "unet", "config": json.dumps(ckpt.config), "info": "{}", "fingerprint": fingerprint(ckpt.tensors)}
    save_file(ckpt.tensors, str(tmp_path / "old.safetensors"), metadata=metadata)  # a fingerprint of tensors alone
    with pytest.raises(LdmError, match="tensors or metadata do not match the fingerprint"):
        load_model(tmp_path / "old.safetensors", UNet)


@pytest.mark.parametrize("change, message", [
    ({"base_channels": "8"}, "config field base_channels = '8' is not of type int"),
    ({"channel_mult": [1, "2"]}, "config field channel_mult = (1, '2') is not of type tuple"),
    ({"dropout": True}, "config field dropout = True is not of type float"),
    ({"base_channels": 0}, "base_channels=0: must be positive"),
    ({"dropout": 1.0}, "dropout=1.0: must be in [0, 1)"),
    ({"num_classes": -1}, "num_classes=-1: must be >= 0"),
    ({"channel_mult": []}, "channel_mult=(): needs at least one level"),
])
def test_config_values_of_the_wrong_type_or_range_are_refused_naming_the_field(tmp_path, change, message):
    path = tmp_path / "u.safetensors"
    save_checkpoint(path, UNet(TINY_UNET).state_dict(), "unet", dict(dataclasses.asdict(TINY_UNET), **change))
    with pytest.raises(LdmError) as error:
        load_model(path, UNet)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_truncated_foreign_and_missing_files_are_refused(tmp_path):
    path = tmp_path / "u.safetensors"
    save_model(path, UNet(TINY_UNET))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LdmError, match="not a readable safetensors file"):
        load_model(path, UNet)
    save_file({"w": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(LdmError, match="without ldm metadata"):
        load_model(tmp_path / "foreign.safetensors", UNet)
    with pytest.raises(LdmError, match="file not found"):
        load_model(tmp_path / "missing.safetensors", UNet)


def test_edited_tensors_fail_the_fingerprint(tmp_path):
    path = tampered_unet_file(tmp_path / "u.safetensors",
                              lambda tensors: dict(tensors, **{"input_conv.bias": tensors["input_conv.bias"] + 1}))
    with pytest.raises(LdmError, match="do not match the fingerprint"):
        load_checkpoint(path, "unet")


def test_the_same_checkpoint_is_the_same_bytes(tmp_path):
    # safetensors orders its header by a randomly keyed hash map; save_checkpoint sorts it
    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, dtype=torch.float64)}
    blobs = set()
    for i in range(5):
        save_checkpoint(tmp_path / f"{i}.safetensors", tensors, "samples", info={k: i % 1 for k in "zyxwvu"})
        blobs.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    loaded = load_checkpoint(tmp_path / "0.safetensors", "samples")
    assert loaded.info == {k: 0 for k in "zyxwvu"} and all(torch.equal(loaded.tensors[k], tensors[k]) for k in tensors)
