import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from fkdiff import FKSteeringPipeline
from fkdiff.pipelines.decoders import LatentRGBDecoder
from fkdiff.testing import tiny_sd_pipeline, tiny_taesd


class LinearVAE(ModelMixin, ConfigMixin):
    """A 'VAE' whose decode is exactly linear per pixel, then nearest-upsampled ×2: output in [-1, 1] space."""

    @register_to_config
    def __init__(self, latent_channels: int = 4, scaling_factor: float = 0.5):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[0.1, -0.2, 0.05, 0.0], [0.0, 0.1, 0.1, -0.1], [0.2, 0.0, 0.0, 0.1]]))
        self.b = torch.nn.Parameter(torch.tensor([0.1, -0.1, 0.0]))

    def decode(self, z, return_dict=False):
        x = torch.einsum("oc,nchw->nohw", self.w, z) + self.b[None, :, None, None]
        return (F.interpolate(x, scale_factor=2, mode="nearest"),)


def test_latent_rgb_fit_recovers_a_linear_decoder():
    vae = LinearVAE()
    latents = 0.5 * torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(0))  # |image| < 1: no clamp
    dec = LatentRGBDecoder.fit(vae, latents)
    # images = (W·(z/s) + b)/2 + 0.5 ⇒ fitted weight W/(2s), bias b/2 + 0.5 (no clamping in this range)
    torch.testing.assert_close(dec.weight, vae.w.detach() / (2 * 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(dec.bias, vae.b.detach() / 2 + 0.5, atol=1e-5, rtol=0)
    assert dec.scale_factor == 2
    z = 0.3 * torch.randn(2, 4, 4, 4)
    assert dec(z).shape == (2, 3, 8, 8)


def test_cheap_decoders_plug_into_the_pipeline():
    pipe = tiny_sd_pipeline()
    fk = FKSteeringPipeline.from_pipe(pipe)
    for dec in (tiny_taesd(), LatentRGBDecoder.fit(pipe.vae)):
        out = fk(
            "a cat",
            reward=lambda im, p: im.mean((1, 2, 3)),
            num_particles=2,
            num_inference_steps=3,
            resample_interval=1,
            intermediate_decoder=dec,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
            eta=1.0,
        )
        assert out.images.shape == (1, 3, 16, 16)
