"""diffusers-facing code: how a stock pipeline's denoising loop is intercepted and steered."""

from .decoders import LatentRGBDecoder
from .fk_steering import FKSteeringOutput, FKSteeringPipeline
from .noise_search import NoiseSearchOutput, NoiseSearchPipeline
from .utils import predict_x0

__all__ = [
    "FKSteeringOutput",
    "FKSteeringPipeline",
    "LatentRGBDecoder",
    "NoiseSearchOutput",
    "NoiseSearchPipeline",
    "predict_x0",
]
